"""Native OFA visual entailment (ResNet variant), state-dict compatible with ModelScope's OFA
checkpoints. The backend lives in `backends.py`; nothing heavy is imported here."""
