"""The CLI as a user runs it: real processes, exit codes, one-line errors without tracebacks."""
from __future__ import annotations

import subprocess
import sys


DESIGN_COMMANDS = ["profiles", "convert", "inspect", "verify", "keygen", "run", "serve", "send",
                   "flash", "bench", "demo"]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edge_aigc", *map(str, args)],
                          capture_output=True, text=True, timeout=60, env=env)


def assert_clean_error(result, code, text):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_lists_every_subcommand_of_the_design():
    out = cli("--help")
    assert out.returncode == 0
    for command in DESIGN_COMMANDS:
        assert f"    {command} " in out.stdout, command


def test_profiles_lists_at_least_six_profiles_in_a_table():
    out = cli("profiles")
    assert out.returncode == 0
    rows = out.stdout.strip().splitlines()[2:]
    assert len(rows) >= 6 and any(r.startswith("rpi5 ") for r in rows)


def test_profiles_show_prints_one_profile():
    out = cli("profiles", "show", "jetson-orin-nano")
    assert out.returncode == 0
    assert "TensorrtExecutionProvider > CUDAExecutionProvider > CPUExecutionProvider" in out.stdout


def test_profiles_detect_suggests_a_profile_for_this_machine():
    out = cli("profiles", "--detect")
    assert out.returncode in (0, 4), out.stderr  # 4: this machine fits no profile, said clearly
    assert "This machine:" in out.stdout
    if out.returncode == 0:
        assert "Suggested profile:" in out.stdout


def test_unknown_profile_is_a_one_line_error_with_exit_4():
    assert_clean_error(cli("profiles", "show", "rpi9"), 4, "unknown profile 'rpi9'")


def test_profiles_check_reports_the_bad_key(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text('name = "mine"\nthreads = 2\n')
    assert_clean_error(cli("profiles", "check", bad), 4, "key 'cores': missing")


def test_keygen_inspect_and_verify_a_signed_bundle(tmp_path, make_bundle):
    out = cli("keygen", tmp_path / "k")
    assert out.returncode == 0 and "key id" in out.stdout
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert_clean_error(cli("keygen", tmp_path / "k"), 6, "already exists")
    bundle = make_bundle(key=tmp_path / "k.key")
    out = cli("inspect", bundle)
    assert out.returncode == 0 and "image-generation" in out.stdout and "signed   yes" in out.stdout
    out = cli("verify", bundle, "--pubkey", tmp_path / "k.pub")
    assert out.returncode == 0 and out.stdout.startswith("OK  tiny-gen 1.0.0"), out.stdout


def test_verify_fails_with_another_key_and_with_a_changed_byte(tmp_path, make_bundle, keypair,
                                                               other_keypair):
    bundle = make_bundle(key=keypair[0], compress=False)
    assert_clean_error(cli("verify", bundle, "--pubkey", other_keypair[1]), 3, "does not verify")
    data = bytearray(bundle.read_bytes())
    data[data.index(b"\x00\x01\x02\x03") + 7] ^= 0x01
    tampered = tmp_path / "tampered.eaigc"
    tampered.write_bytes(bytes(data))
    assert_clean_error(cli("verify", tampered, "--pubkey", keypair[1]), 3,
                       "'model.onnx' does not match its sha256")


def test_verify_of_a_missing_file_is_a_clean_error(tmp_path):
    assert_clean_error(cli("verify", tmp_path / "nope.eaigc"), 3, "no such file")


def test_models_install_list_rollback_through_the_cli(tmp_path, make_bundle):
    state = tmp_path / "state"
    for v in ("1.0.0", "2.0.0"):
        assert cli("models", "--state-dir", state, "install", make_bundle(version=v)).returncode == 0
    listing = cli("models", "--state-dir", state, "list").stdout
    assert "2.0.0    *" in listing and "1.0.0" in listing
    out = cli("models", "--state-dir", state, "rollback", "tiny-gen")
    assert out.returncode == 0 and "rolled back to 1.0.0" in out.stdout
    assert_clean_error(cli("models", "--state-dir", state, "remove", "tiny-gen", "1.0.0"), 5, "is active")
    assert_clean_error(cli("models", "--state-dir", state, "rollback", "nope"), 5, "no previous version")


def test_bench_without_the_bench_extra_says_what_to_install():
    code = ("import sys; sys.modules['onnxruntime_genai'] = None; from edge_aigc.cli import main; "
            "sys.exit(main(['bench', '--quick']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert_clean_error(out, 8, "bench needs the host and bench extras")


def test_bench_refuses_an_unknown_part():
    out = cli("bench", "--only", "text,nonsense")
    assert out.returncode == 2 and "nonsense" in out.stderr


def test_usage_error_exits_2():
    out = cli("verify")
    assert out.returncode == 2 and "usage:" in out.stderr


def test_inspect_summarises_a_language_model_and_folds_its_cache_tensors():
    import json

    from edge_aigc.zoo import zoo_bundle

    path = zoo_bundle("fortune-gpt", "x86-avx2").path
    out = cli("inspect", path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("model ") and "4 layers, 4 KV heads of 64" in line for line in lines)
    assert any(line.startswith("context ") and "128 tokens" in line for line in lines)
    assert any(line.startswith("chat ") for line in lines)
    assert "+ 8 KV-cache tensors" in out.stdout and "past_key_values.1.key" not in out.stdout
    assert len(lines) < 60
    whole = json.loads(cli("inspect", path, "--json").stdout)
    assert len(whole["io"]["inputs"]) == 11 and whole["name"] == "fortune-gpt"
