"""The lab's PostgreSQL as an RDS instance's clients reach it: port 5432 of an address of its own on
loopback, with TLS, so that a database URL with the RDS endpoint's name and ``sslmode=require``
works unchanged.

The lab's server (the ``pgserver`` wheel) is built without OpenSSL, so this front does the TLS part
of PostgreSQL's protocol: to a client's SSLRequest it answers ``S`` and takes the TLS handshake (a
GSSENCRequest is declined with ``N``, as RDS does), then relays the session, decrypted, to the
server on 127.0.0.1. A client that starts without TLS is relayed as it is, as RDS allows unless
``rds.force_ssl`` is set. The certificate is the lab's own: ``sslmode=require`` checks none, as
with RDS unless the client is given Amazon's CA.

Which names lead here is the lab's business (:mod:`lab.kube.runner` writes the RDS endpoints into
the hosts file of the processes it runs).

Usage: ``python -m lab.pg_front --listen ADDRESS:PORT --upstream 127.0.0.1:PORT --cert FILE --key FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import sys
from pathlib import Path

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104  # the request codes of PostgreSQL's protocol 3


def certificate(cert: Path, key: Path, address: str) -> None:
    """A self-signed certificate for the front (``address`` and any RDS endpoint name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lab PostgreSQL")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName("*.rds.amazonaws.com")]
    built = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.SubjectAlternativeName(names), critical=False).sign(private, hashes.SHA256()))
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    key.chmod(0o600)


def free_address(port: int = 5432) -> str:
    """An address of 127.2.0.0/16 where ``port`` is free: one per lab, so labs run side by side."""
    import secrets

    for _ in range(200):
        address = f"127.2.{secrets.randbelow(256)}.{1 + secrets.randbelow(254)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, port))
            except OSError:
                continue
            return address
    raise RuntimeError(f"no free address for port {port} in 127.2.0.0/16")


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _session(reader, writer, upstream: tuple[str, int], context: ssl.SSLContext) -> None:
    try:
        head = await reader.readexactly(8)
        length, code = struct.unpack("!ii", head)
        if code == GSSENC_REQUEST:
            writer.write(b"N")
            await writer.drain()
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
        if code == SSL_REQUEST:
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(context)
            first = b""
        else:
            first = head + await reader.readexactly(length - 8)
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        writer.close()
        return
    up_writer.write(first)
    await asyncio.gather(_relay(reader, up_writer), _relay(up_reader, writer))


async def serve(listen: tuple[str, int], upstream: tuple[str, int], context: ssl.SSLContext) -> None:
    server = await asyncio.start_server(lambda r, w: _session(r, w, upstream, context), *listen)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=_address)
    parser.add_argument("--upstream", required=True, type=_address)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.upstream, context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
