"""Push a saved query reward model folder (weights, tokenizer, code, model card) to the Hugging Face Hub.

python scripts/push.py results/<model>/final_model your-org/query-reward [--private] [--revision BRANCH]
"""

import sys

from qrm_hf.cli import push_main


def main(argv: list[str] | None = None) -> int:
    return push_main(argv)


if __name__ == "__main__":
    sys.exit(main())
