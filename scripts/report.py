"""Rebuild a study's report.md and plots from its Optuna storage: `qrm report`.

python scripts/report.py --storage sqlite:///results/m/study.db --study-name m-qrm
"""

import sys

from qrm_hf.commands.report import main

if __name__ == "__main__":
    sys.exit(main())
