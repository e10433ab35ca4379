"""What a study is, checked before anything starts: TOML files and shipped configs, the study config, search
spaces, storage URL rules, trial labels, PBT settings and the pre-launch checks. The bottom layer of ``study``:
it imports nothing from the layers above (docs/design.md); no Ray at import time."""
