import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Without a GPU, Triton kernels (backbones/fused.py) run in Triton's interpreter, on CPU tensors; the flag must
# be set before Triton is first imported.
import torch  # noqa: E402 - after the environment above

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# One tensor cache for the whole session (shared with the CLI subprocesses the tests start), never
# the user's own.
os.environ["EHRBENCH_CACHE"] = tempfile.mkdtemp(prefix="ehrbench-test-cache-")
atexit.register(shutil.rmtree, os.environ["EHRBENCH_CACHE"], ignore_errors=True)  # no folder left per test session
# The CLI's leaderboard reads the published set (leaderboard/published/) beside --results by default: tests see
# an empty folder of published sets instead, unless they name one (tests/test_published.py reads the real one).
os.environ["EHRBENCH_PUBLISHED"] = tempfile.mkdtemp(prefix="ehrbench-test-published-")
atexit.register(shutil.rmtree, os.environ["EHRBENCH_PUBLISHED"], ignore_errors=True)
