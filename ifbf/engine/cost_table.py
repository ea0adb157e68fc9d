"""``ifbf cost --table N``: what each row of a paper table costs to run (parameters, FLOPs, latency; GPU memory
where a GPU is present), beside what it gains, as results/[<paper>/]<preset>/cost_table<N>.md. The engine runs each
row's model; ``models.cost`` holds the measurements."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from ifbf.config import Config, WeightsConfig
from ifbf.models import build_model
from ifbf.models.cost import count_params, gpu_cost, measure, measure_flops
from ifbf.store.safefile import atomic_write_text, make_dirs


def cost_table(number: int, caption: str, title: str, rows: list[tuple[str, Config]], preset: str,
               size: tuple[int, int], latency_size: tuple[int, int], repeat: int, out: Path) -> Path:
    """``out``/cost_table<N>.md: what each row of a table (its name and resolved config) costs, headed by the
    table's ``caption`` (``TableSpec.caption``: it names a paper other than the default) and ``title``."""
    records = []
    on_gpu = torch.cuda.is_available()
    for name, cfg in tqdm(rows, desc=f"cost of table {number}", unit="row", disable=None):
        model_cfg = dataclasses.replace(cfg.model, weights=WeightsConfig())
        params = count_params(build_model(model_cfg)) / 1e6
        flops = measure_flops(model_cfg, *size)
        cpu = measure(dataclasses.replace(model_cfg, norm="bn"), *latency_size, repeat=repeat).latency_ms
        record = {"row": name, "backbone": cfg.model.backbone, "params (M)": round(params, 2), f"GFLOPs @ {size[0]}x{size[1]}": round(flops, 1),
                  f"CPU latency @ {latency_size[0]}x{latency_size[1]} (ms)": round(cpu)}
        if on_gpu:
            latency, memory = gpu_cost(model_cfg, *size, cfg.data.crop_size)
            record[f"GPU latency @ {size[0]}x{size[1]} (ms)"] = round(latency, 1)
            record["peak training memory (GiB, batch 2)"] = round(memory, 2)
        records.append(record)
    df = pd.DataFrame.from_records(records).set_index("row")
    path = make_dirs(out) / f"cost_table{number}.md"
    threads = torch.get_num_threads()
    note = (f"Preset {preset}. CPU latency: median of {repeat} forward passes of the deployment form (BatchNorm, "
            f"and balance weights where the model has them, folded into the convolutions; channels_last), batch 1, "
            f"{threads} threads. FLOPs: 2 per multiply-add, of the inference network (training-only auxiliary heads "
            "excluded). "
            + ("GPU columns: this machine's GPU." if on_gpu else "No GPU here: GPU latency and memory not measured."))
    atomic_write_text(path, f"# Cost of {caption}'s rows: {title}\n\n{df.to_markdown()}\n\n{note}\n")
    return path
