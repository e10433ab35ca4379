"""Where a study lives and the files that keep its state: its location, atomic writes, the Optuna journal, the
driver lock and lease, checkpoint clean-up and the files a killed driver left. Imports only ``study.config.files``."""
