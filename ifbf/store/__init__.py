"""The run store: one run directory and its files (``rundir``, with its collaborators ``evaluations`` for
metrics.json and per_image.npz and ``runlog`` for log.jsonl), the types they hold (``runtypes``; the preflight's
record: ``measurement``), the lock that gives a run one owner (``runlock``), atomic writes and their failures
(``safefile``) and what a run ran on (``environment``)."""
