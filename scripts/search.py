"""Search hyperparameters, retrain the best model on train+dev, report test metrics, save (and push) it.

accelerate launch scripts/search.py --config configs/default.yaml
python scripts/search.py --config configs/quickstart.yaml
"""

import sys

from qrm_hf.cli import search_main


def main(argv: list[str] | None = None) -> int:
    return search_main(argv)


if __name__ == "__main__":
    sys.exit(main())
