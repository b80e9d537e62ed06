"""Rank bodies for tests that spawn gloo processes (torch.multiprocessing): a light module, so each rank starts fast."""

import os

import torch
from torch import nn

from transferlab import distributed


def global_norm_and_optimizer(rank: int, rendezvous: str) -> None:
    """One of 2 ranks, each holding half of a batch: the global batch norm's output, input and weight gradients and
    running statistics equal BatchNorm2d's on the whole batch; rank 0's optimizer state arrives at rank 1."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": "2"})
    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    distributed._control.append(torch.distributed.new_group(backend="gloo"))
    try:
        x = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0)) * 3 + 1
        weights = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(1))  # of the loss
        whole, mine = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        with torch.no_grad():
            whole.weight.copy_(torch.linspace(0.5, 1.5, 4))
            whole.bias.copy_(torch.linspace(-1, 1, 4))
        mine.load_state_dict(whole.state_dict())
        everything = x.clone().requires_grad_()
        expected = whole(everything)
        (expected * weights).sum().backward()
        half = slice(4 * rank, 4 * rank + 4)
        part = x[half].clone().requires_grad_()
        with distributed.global_batch_norm(mine):
            y = mine(part)
            (y * weights[half]).sum().backward()
        assert type(mine) is nn.BatchNorm2d  # swapped back
        close = {"rtol": 1e-5, "atol": 1e-5}
        torch.testing.assert_close(y, expected[half], **close)
        torch.testing.assert_close(part.grad, everything.grad[half], **close)
        torch.testing.assert_close(distributed.total(mine.weight.grad), whole.weight.grad, **close)
        torch.testing.assert_close(mine.running_mean, whole.running_mean, **close)
        torch.testing.assert_close(mine.running_var, whole.running_var, **close)
        optimizer = torch.optim.SGD(mine.parameters(), lr=0.1, momentum=0.9)
        if rank == 0:
            optimizer.step()
        distributed.share_optimizer(optimizer)
        for p in mine.parameters():
            buffer = optimizer.state[p]["momentum_buffer"]
            torch.testing.assert_close(distributed.total(buffer), 2 * buffer)  # the same on both ranks
    finally:
        torch.distributed.destroy_process_group()
