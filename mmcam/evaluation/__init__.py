"""``mmcam eval``: the paper's localization and faithfulness protocols, per task, sharded and resumable."""
