"""The run store: one run directory and its files (``rundir``), the types they hold (``runtypes``), the lock
that gives a run one owner (``runlock``), atomic writes and their failures (``safefile``) and what a run ran
on (``environment``)."""
