"""Search hyperparameters, train the final model, report test metrics, save (and push) it: `qrm search`.

accelerate launch scripts/search.py --config default
python scripts/search.py --config quickstart
"""

import sys

from qrm_hf.commands.search import main

if __name__ == "__main__":
    sys.exit(main())
