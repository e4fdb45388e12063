"""Export failures name torch's own first error line and give advice for its kind."""

import pytest
import torch

from ember.export.errors import way_out
from ember.package import advice, first_line
from ember.package.cause import classify


def test_first_line_strips_colour_and_follows_the_cause():
    try:
        try:
            raise RuntimeError(
                "\x1b[1m\x1b[31mTensor dtype mismatch! Expected: torch.int64, Got: torch.float32"
                "\x1b[0m\nwhile executing node ..."
            )
        except RuntimeError as inner:
            raise ValueError(
                "Failed to export the model with torch.export. This is step 1/3 ..."
            ) from inner
    except ValueError as exc:
        line = first_line(exc)
    assert line == "RuntimeError: Tensor dtype mismatch! Expected: torch.int64, Got: torch.float32"
    assert "\x1b" not in way_out(RuntimeError("\x1b[31mboom\x1b[0m"))


def test_long_lines_end_at_a_sentence():
    text = "First sentence is here. " + "word " * 200
    line = first_line(RuntimeError(text))
    assert line == "RuntimeError: First sentence is here."


@pytest.mark.parametrize(
    ("cause", "kind", "hint"),
    [
        ("Tensor dtype mismatch! Expected: torch.int64, Got: torch.float32", "dtype", "int64"),
        ("Could not guard on data-dependent expression u0 > 0", "data_dependent", "torch.cond"),
        (
            "Constraints violated (sequence)! Not all values of sequence ...",
            "constraint",
            "--static",
        ),
        ("aten::foo is not supported in opset 18", "unsupported", "opset"),
        ("ValueError: Cannot view a tensor with shape [4, 16, 32] and strides", "view", "eager"),
        ("Something odd", "other", "ember -v"),
    ],
)
def test_advice_is_specific_to_the_cause(cause, kind, hint):
    assert classify(cause) == kind
    assert hint in advice(cause)


def test_real_data_dependent_failure_gets_control_flow_advice():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(Exception) as caught:
        torch.export.export(Branchy(), (torch.randn(2, 3),))
    message = way_out(caught.value)
    assert "torch.cond" in message and "\x1b" not in message
    assert "Way out" in message and message.count("Way out") == 1


def test_mobile_gets_its_own_advice():
    assert "--static" in way_out("ValueError: Cannot view a tensor", target="mobile")
