"""Data: split CSVs -> graph tensors; `download` and `preprocess` commands for raw files.

    python dataloader.py download ML-100K --data_dir dataset
    python dataloader.py preprocess ML-100K --data_dir dataset
"""
import sys


if __name__ == "__main__":
    # The raw-data commands live in data_prep.py; this keeps the published entry point name.
    from data_prep import main as data_prep_main

    sys.exit(data_prep_main(sys.argv[1:]))
