import subprocess
import sys

from udml_cli import __version__


def test_help_lists_groups_without_importing_torch():
    code = (
        "import sys\n"
        "from udml_cli.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH')\n"
        "print('FAISS' if 'faiss' in sys.modules else 'NOFAISS')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for group in ("dataset", "train", "cluster", "eval", "embed"):
        assert group in proc.stdout
    assert "NOTORCH" in proc.stdout and "NOFAISS" in proc.stdout


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and __version__ in r.out


def test_unknown_backbone_lists_valid_ones(cli, layout):
    r = cli("eval", "--backbone", "alexnetz", "--dataset", layout)
    assert r.code == 2
    assert "unknown backbone 'alexnetz'" in r.err and "efficientnet_lite0" in r.err
    assert "Traceback" not in r.err


def test_torchvision_imagenet_without_network_is_one_line(cli, layout):
    r = cli("eval", "--backbone", "resnet18", "--weights", "imagenet", "--dataset", layout)
    assert r.code != 0
    lines = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "resnet18" in lines[0]
    assert "Traceback" not in r.err
