"""The layers' gated activation (``gate.py``): on CPU float32 and bf16 one compiled pass
each way, equal to torch's tanh(f) * sigmoid(g) and its gradient to float32 rounding (bf16:
to one rounding of the float32 values, closer than torch's own bf16 expression)."""

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


def test_the_bf16_gate_is_the_float32_one_rounded_once_and_closer_than_torchs():
    """On bf16 values (a bf16-autocast training step's conv outputs) the gate and its
    gradient are computed in float32 and rounded once: within a bf16 rounding of the
    float32 gate of the same values, and closer to it than torch's bf16 expression, which
    rounds after each operation."""
    gen = torch.Generator().manual_seed(0)
    a = (torch.randn(3, 300, 64, generator=gen) * 4).bfloat16()
    a[0, 0] = torch.linspace(-30, 30, 64).bfloat16()  # saturated ends
    dz = torch.randn(3, 300, 32, generator=gen).bfloat16()
    exact = a.float().requires_grad_()
    _torch_gate(exact).backward(dz.float())
    z_exact = _torch_gate(exact.detach())
    errors = {}
    for name, fn in (("compiled", gate.gated), ("torch", _torch_gate)):
        x = a.clone().requires_grad_()
        z = fn(x)
        z.backward(dz)
        assert z.dtype == x.grad.dtype == torch.bfloat16
        errors[name] = ((z.float() - z_exact).abs(), (x.grad.float() - exact.grad).abs())
    z_err, grad_err = errors["compiled"]
    assert (z_err <= z_exact.abs() * 2.0 ** -8 + 1e-6).all()  # half a bf16 step (8 bits)
    assert z_err.max() < errors["torch"][0].max()
    assert grad_err.max() < errors["torch"][1].max()
    assert grad_err.max() < 0.01 * exact.grad.abs().max()


def test_the_model_computes_its_gates_compiled_on_cpu_and_with_torch_elsewhere():
    """The training and scoring forward on CPU float32 takes the compiled gate (its
    backward node is in the graph), and so does a bf16-autocast one (the bf16 gate); under
    fp16 autocast it is torch's expression."""
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
        assert "_Gate16Backward" in names(model.valid_logits(x))
    with torch.autocast("cpu", dtype=torch.float16):
        found = names(model.valid_logits(x))
    assert "TanhBackward0" in found and not {"_GateBackward", "_Gate16Backward"} & found
