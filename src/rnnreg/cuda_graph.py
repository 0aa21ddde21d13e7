"""A training window's program captured as one CUDA graph and replayed: the base of the fast step (rnnreg.fast)
and of a stacked group's step (rnnreg.stacked_step). Without CUDA the same program runs eagerly."""

from __future__ import annotations

import contextlib

import torch

# eager windows before the capture: cuDNN, autograd and the allocator set up on real training windows
WARMUP_WINDOWS = 3


class GraphedStep:
    """A training window as `program()` on static buffers: run eagerly, or on CUDA captured as one CUDA graph
    after `warmup` eager windows (run on a side stream, as capture requires) and replayed from then on.
    Subclasses give the program, how their gradients are cleared and what capture needs around it."""

    def __init__(self, device: torch.device, graph: bool, warmup: int):
        self.graph = graph and device.type == "cuda"
        self.warmup = warmup
        self.cuda_graph: torch.cuda.CUDAGraph | None = None
        self.windows_run = 0

    def program(self) -> None:
        raise NotImplementedError

    def clear_grads(self) -> None:
        raise NotImplementedError

    def before_capture(self, graph: torch.cuda.CUDAGraph) -> None:
        """What the graph must know before recording (random generators it advances)."""

    def capture_context(self):
        return contextlib.nullcontext()

    def run(self) -> None:
        """One window: eager, a warm-up window, the capture, or a replay."""
        if self.cuda_graph is None:
            self.clear_grads()  # captured: the graph then rewrites the same grads
        if self.cuda_graph is not None:
            self.cuda_graph.replay()
        elif self.graph and self.windows_run >= self.warmup:
            self.capture()
            self.cuda_graph.replay()
        elif self.graph:  # warm-up windows: eager, on a side stream (cuDNN and autograd set up there)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.program()
            torch.cuda.current_stream().wait_stream(side)
        else:
            self.program()
        self.windows_run += 1

    def capture(self) -> None:
        torch.cuda.synchronize()
        self.cuda_graph = torch.cuda.CUDAGraph()
        self.before_capture(self.cuda_graph)
        with self.capture_context(), torch.cuda.graph(self.cuda_graph):  # records the program; replay() runs it
            self.program()
