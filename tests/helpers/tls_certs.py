"""A throwaway PKI for TLS tests: a CA, a server certificate for 127.0.0.1, client certificates."""
from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert, key) -> tuple[Path, Path]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return path.with_suffix(".crt"), path.with_suffix(".key")


def _cert(subject: str, key, issuer_name, issuer_key, ca: bool, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, Path]:
    """ca.crt; server.crt/.key (IP SAN 127.0.0.1); client.crt/.key (signed by the CA);
    rogue.crt/.key (self-signed, so untrusted)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-aigc test CA")])
    ca = _cert("edge-aigc test CA", ca_key, ca_name, ca_key, ca=True)
    out = {"ca": _write(directory / "ca", ca, ca_key)[0]}
    server_key = _key()
    server = _cert("127.0.0.1", server_key, ca_name, ca_key, ca=False,
                   san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    out["server_crt"], out["server_key"] = _write(directory / "server", server, server_key)
    client_key = _key()
    out["client_crt"], out["client_key"] = _write(
        directory / "client", _cert("device", client_key, ca_name, ca_key, ca=False), client_key)
    rogue_key = _key()
    rogue_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")])
    out["rogue_crt"], out["rogue_key"] = _write(
        directory / "rogue", _cert("rogue", rogue_key, rogue_name, rogue_key, ca=False), rogue_key)
    return out
