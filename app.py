"""TnD Studio: `python app.py` locally and as a Hugging Face Space (sdk: gradio, app_file: app.py).

Host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Gradio reads them). Models run on
the GPU when there is one and on the CPU otherwise.
"""

import logging

from app.ui import CSS, build_app

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

demo, _ = build_app()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=4).launch(css=CSS, max_file_size="50mb", show_error=True)
