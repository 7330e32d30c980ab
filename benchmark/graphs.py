"""Training steps replayed from CUDA graphs: one launch per step instead of hundreds.

At FlexCare's size (d = 128, short sequences) an eager step is bound by kernel launches, not by
arithmetic: the GPU waits on Python. Capturing the whole step (gather of the batch from the resident
tensors, forward, loss, backward, optimiser update) once per padded-width bucket and replaying it
removes that overhead without changing the computation:

- the batch's composition is unchanged; only its padded widths are bucketed (``bucket``), and padded
  positions are masked out of attention, so the widths do not change the result;
- dropout and the MoE's gating noise draw from the CUDA generator, which graphs advance on every
  replay as eager steps do;
- the learning rate is a device tensor that the scheduler updates in place, so one graph serves every
  epoch; the weight decay and the method's ``capture_key(epoch)`` are part of the graph's key, so a
  change of either captures anew.

Only steps of a full batch are captured; the last, shorter batch of an epoch runs eagerly. Methods opt
in with ``Method.capturable = True`` (their loss must be a pure tensor function of its arguments and of
tensors they update in place, with no host synchronisation).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

#: Padded widths are rounded up to one of these (then capped at the split's longest), so that a run
#: captures a handful of graphs rather than one per distinct batch maximum.
BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512)
MAX_GRAPHS = 48  # beyond this, steps of new widths run eagerly (memory held by graphs stays bounded)
#: Real positions of a batch (``Batch.tokens``) are rounded up to a multiple of this: at full scale a
#: batch of 128 holds 12.4k +- 0.7k of them, so two or three values per run, with 12 % of the rows of
#: a packed step left empty on average (2048: 8 %, but 1.5x the graphs).
TOKEN_STEP = 4096


def bucketed(widths, max_ehr: int, max_note: int) -> tuple:
    """A batch's padded widths as a graph key. One part: each width to its bucket. Several parts
    (``length_chunks``): series widths to powers of two and every note to the longest, so that the
    tuple of per-part widths takes a few values rather than the product of each part's. A third
    entry (real positions) is rounded up to ``TOKEN_STEP``."""
    if len(widths) == 1:
        return ((bucket(widths[0][0], max_ehr), bucket(widths[0][1], max_note), *_tokens(widths[0])),)
    return tuple((min(max_ehr, 1 << max(3, (w[0] - 1).bit_length())), max_note, *_tokens(w)) for w in widths)


def _tokens(widths) -> tuple:
    return (-(-widths[2] // TOKEN_STEP) * TOKEN_STEP,) if len(widths) > 2 else ()


def bucket(width: int, cap: int) -> int:
    """The smallest bucket >= ``width``, at most ``cap`` (multiples of 128 beyond the table)."""
    for b in BUCKETS:
        if b >= width:
            return min(b, cap)
    return min(-(-width // 128) * 128, cap)


class CapturedSteps:
    """Replays ``step(index, widths)`` from a CUDA graph per key; returns its outputs.

    ``step`` is a training step (forward, backward, optimiser update of rows ``index`` padded to
    ``widths``, returning the loss) or an evaluation forward pass (returning the logits). Its
    outputs are static tensors, overwritten by the next replay: read them before that.
    """

    def __init__(self, step: Callable, batch_size: int, device: torch.device, max_graphs: int = MAX_GRAPHS):
        self.step, self.batch_size, self.max_graphs = step, batch_size, max_graphs
        self.index = torch.zeros(batch_size, dtype=torch.long, device=device)  # the graphs' input
        self.graphs: dict = {}
        self.captures = 0
        # One memory pool for all of this run's graphs: memory is then the largest step's, not the sum
        # over graphs (with a pool and a capture stream per graph, one full-track MIRACL run reserved
        # 63 GB of an 80 GB H100 while it allocated at most 8.5 GB, and three packed runs filled it). Safe
        # here because graphs never replay concurrently and every output is read (copied or added into
        # an eager tensor) before the next replay, which may reuse its memory.
        self.pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        # ... and one capture stream: the caching allocator reuses a freed block only on the stream it
        # was allocated on, so a new stream per capture would make the shared pool grow by each graph.
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def can_replay(self, index: torch.Tensor, key) -> bool:
        return len(index) == self.batch_size and (key in self.graphs or len(self.graphs) < self.max_graphs)

    def __call__(self, index: torch.Tensor, widths, key, before_capture: Callable[[], None] | None = None):
        self.index.copy_(index, non_blocking=True)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(widths, before_capture)
        graph, outputs = entry
        graph.replay()
        return outputs

    def _capture(self, widths, before_capture):
        # Training passes ``zero_grad(set_to_none=True)``: gradients are then allocated inside the
        # capture, written and read within each replay, so graphs may replay in any order.
        if before_capture is not None:
            before_capture()
        graph = torch.cuda.CUDAGraph()
        # Not ``torch.cuda.graph``: it synchronises the whole device and empties the allocator's cache
        # before every capture, which stalls runs packed beside this one and makes their next
        # allocations go back to cudaMalloc; ordering on the capture stream is all a capture needs.
        current = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            # "thread_local": runs packed as threads (``packing.py``) capture while holding the baton,
            # but another run may be reading its results back to the host meanwhile.
            graph.capture_begin(self.pool, capture_error_mode="thread_local")
            try:
                # A compiled model (``--compile on``) must not compile inside a capture (compilation
                # runs and times kernels); a shape its compiled code does not cover runs eagerly.
                with torch.compiler.set_stance("eager_on_recompile"):
                    outputs = self.step(self.index, widths)
            except BaseException:
                with contextlib.suppress(RuntimeError):  # the step's own error is the one to report
                    graph.capture_end()
                raise
            graph.capture_end()
        current.wait_stream(self.stream)
        self.captures += 1
        return graph, outputs
