"""Ray assembly: the Tuner and the driver (``tuner``), the searcher, schedulers, snapshot pacing, storage sync,
autoscaling, PBT, progress and interrupts. Imports ``study.state`` and ``study.config.files``, never the readers above."""
