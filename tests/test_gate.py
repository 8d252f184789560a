"""The layers' gated activation (``gate.py``): on CPU float32 one compiled pass each way,
equal to torch's tanh(f) * sigmoid(g) and its gradient to float32 rounding."""

import torch

from wavegen import WaveNet
from wavegen.models.wavenet import gate


def _torch_gate(a: torch.Tensor) -> torch.Tensor:
    f, g = a.chunk(2, dim=-1)
    return torch.tanh(f) * torch.sigmoid(g)


def test_the_compiled_gate_equals_torchs_and_so_does_its_gradient():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 70, 40, generator=gen) * 4
    a[0, 0] = torch.linspace(-30, 30, 40)  # saturated ends, zero
    a[0, 1] = 0.0
    weights = torch.randn(3, 70, 20, generator=gen)
    results = []
    for fn in (gate.gated, _torch_gate):
        x = a.clone().requires_grad_()
        z = fn(x)
        (z * weights).sum().backward()
        results.append((z.detach(), x.grad))
    (z, grad), (z_ref, grad_ref) = results
    torch.testing.assert_close(z, z_ref, atol=5e-7, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=2e-6, rtol=1e-5)
    assert z.abs().max() > 0.99  # the saturated ends were reached


def test_the_model_computes_its_gates_compiled_on_cpu_and_with_torch_elsewhere():
    """The training and scoring forward on CPU float32 takes the compiled gate (its
    backward node is in the graph); under bf16 autocast it is torch's expression."""
    torch.manual_seed(0)
    model = WaveNet.from_preset("tiny")
    x = torch.randint(0, 256, (2, model.receptive_field + 50))

    def names(out: torch.Tensor) -> set[str]:
        seen, found, todo = set(), set(), [out.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            found.add(node.name())
            todo += [n for n, _ in node.next_functions]
        return found

    assert "_GateBackward" in names(model.valid_logits(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "_GateBackward" not in names(model.valid_logits(x))
