"""The `ember` command line, as a user runs it."""

import json
import re
import subprocess
import sys

import pytest

from ember.cli import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "demo", "inspect", "export", "serve", "report"):
        assert command in out


@pytest.mark.parametrize("command", ["train", "demo", "inspect", "export", "serve", "report"])
def test_each_command_has_help(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "usage: ember " + command in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "no/such/repository"], "does not exist"),
        (["inspect", "no_package"], "no_package"),
        (["report", "."], "history.json"),
    ],
)
def test_bad_paths_give_a_clear_error(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert "Traceback" not in err


def test_a_long_error_stays_on_one_line(capsys):
    # rich breaks lines at 80 columns when stderr is not a terminal; an error naming a long path
    # must stay one line that can be read whole and copied
    missing = "no/such/" + "deeply_nested_directory/" * 4 + "repository"
    assert main(["serve", missing]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and missing in lines[0]


def test_train_help_names_both_output_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "default demo_output" in out and "ember_output" in out


def test_bad_option_values_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer, received 0" in capsys.readouterr().err


def test_export_rejects_an_unknown_target(tmp_path, capsys):
    import torch

    import ember

    pkg = ember.save(torch.nn.Linear(4, 2), tmp_path / "pkg", example_input=torch.zeros(2, 4))
    assert main(["export", str(pkg), "--to", "onnx,tflite"]) == 1
    assert "Unknown export target(s) ['tflite']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--rtol", "-1", "expected a number >= 0"), ("--min-top1", "2", "in [0, 1]")],
)
def test_export_refuses_a_bad_tolerance_before_touching_the_package(
    option, value, message, tmp_path, capsys
):
    # `--rtol -1` used to run the export, fail its parity and delete the target it replaced
    import torch

    import ember

    pkg = ember.save(torch.nn.Linear(4, 2), tmp_path / "pkg", example_input=torch.zeros(2, 4))
    (pkg / "model.onnx").write_bytes(b"an earlier export")
    assert main(["export", str(pkg), "--to", "onnx,int8", option, value]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert (pkg / "model.onnx").read_bytes() == b"an earlier export"


@pytest.mark.parametrize("option", ["--poll-interval", "--grace-period", "--body-timeout"])
def test_serve_refuses_a_negative_duration(option, tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--port", "0", option, "-1"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "expected a number >= 0" in err and "Traceback" not in err


@pytest.mark.e2e
def test_demo_trains_to_095_exports_serves_and_answers_every_protocol(tmp_path):
    # The default training settings (what `make demo` runs); fewer export targets to stay quick.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ember.cli",
            "demo",
            "--output",
            str(tmp_path),
            "--to",
            "onnx,int8",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", result.stdout).group(1))
    assert accuracy >= 0.95
    answers = re.findall(
        r"^(KServe v2 REST|TF Serving REST|TorchServe REST|KServe v2 gRPC)\s+predicted (\[.*?\])",
        result.stdout,
        re.M,
    )
    assert len(answers) == 4
    assert len({a[1] for a in answers}) == 1  # every protocol gives the same predictions
    manifest = json.loads((tmp_path / "model" / "ember.json").read_text())
    assert set(manifest["targets"]) == {"onnx", "int8"}
    assert manifest["targets"]["onnx"]["max_abs_diff"] < 1e-4
    assert (tmp_path / "runs" / "digits" / "version_0" / "report.html").is_file()


def test_version_prints_ember_and_torch_versions(capsys):
    import torch

    import ember

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ember {ember.__version__} (torch {torch.__version__}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "--epochs", "abc"],
            "argument --epochs: expected a positive integer, received abc",
        ),
        (["train", "--batch-size", "1.5"], "argument --batch-size: expected a positive integer"),
        (["serve", ".", "--port", "http"], "argument --port: expected a port number 0..65535"),
        (["serve", ".", "--grpc-port", "70000"], "argument --grpc-port: expected a port number"),
    ],
)
def test_bad_values_name_the_option_not_private_helpers(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "_positive_int" not in err and "_port" not in err and "Traceback" not in err


def test_serve_ports_are_derived_from_the_rest_port_so_two_servers_do_not_clash():
    from ember.cli import serve_ports

    assert serve_ports(8080, None, None) == (8081, 8082)
    assert serve_ports(9000, None, None) == (9001, 9002)
    assert serve_ports(0, None, None) == (0, 0)  # every port free
    assert serve_ports(0, 7001, None) == (7001, 0)
    with pytest.raises(ValueError, match="pass --grpc-port and --management-port"):
        serve_ports(65535, None, None)
