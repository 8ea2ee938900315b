"""Serve a saved query reward model over HTTP with continuous batching (the same as `qrm serve`).

python scripts/serve.py --model runs/quickstart/final_model --port 8000
curl -s localhost:8000/score -H 'content-type: application/json' -d '{"queries": ["how do owls hunt ?"]}'
"""

import sys


def main(argv: list[str] | None = None) -> int:
    from qrm_hf.commands.serve import main as serve_main

    return serve_main(argv)


if __name__ == "__main__":
    sys.exit(main())
