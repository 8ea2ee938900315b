"""Rebuild a search's plots and report.md from its Optuna storage, also while workers are still running.

    python scripts/report.py --storage sqlite:///results/answerdotai_ModernBERT-base/study.db \
        --study-name answerdotai_ModernBERT-base-qrm
    python scripts/report.py --storage postgresql://user@host/db --study-name my-study --output-dir reports/my
"""

import sys


def main(argv: list[str] | None = None) -> int:
    from qrm_hf.report import report_main

    return report_main(argv)


if __name__ == "__main__":
    sys.exit(main())
