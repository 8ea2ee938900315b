"""Score search queries for wellformedness with a saved query reward model.

python scripts/predict.py --model runs/quickstart/final_model "how do owls hunt ?" "owls hunt how"
python scripts/predict.py --model org/query-reward --input queries.tsv --format tsv --output scores.tsv
python scripts/predict.py --model runs/quickstart/final_model < queries.txt
"""

import sys


def main(argv: list[str] | None = None) -> int:
    from qrm_hf.predict_cli import predict_main

    return predict_main(argv)


if __name__ == "__main__":
    sys.exit(main())
