"""TnD Studio: `python app.py` locally and as a Hugging Face Space (sdk: gradio, app_file: app.py).

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads them). Models run on
the GPU when there is one and on the CPU otherwise.
"""

import argparse
import logging

from app.hosting import HostPolicy
from app.ui import CSS, build_app, make_context

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

parser = argparse.ArgumentParser(description="TnD Studio")
parser.add_argument(
    "--hosted",
    action="store_true",
    help="hosted mode for a public app: no remote code, no local paths, bounded work (on by itself on a Space)",
)
arguments, _ = parser.parse_known_args()  # a Space or `gradio app.py` may pass arguments of its own
demo, _ = build_app(make_context(policy=HostPolicy.from_env(hosted=True if arguments.hosted else None)))

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=4).launch(css=CSS, max_file_size="50mb", show_error=True)
