"""A real IMAP server for the tests: Debian's Dovecot (package dovecot-imapd, which .ci/run installs), run as
a child process with a configuration of its own in a temporary directory. It listens on 127.0.0.1 only,
on free ports: plain IMAP (which also offers STARTTLS) and IMAP over TLS, with a self-signed certificate
made for the test run. Cleartext login is allowed without TLS, so tests can log in on the plain port. Dovecot 2.3 (Debian 12) and
2.4 (Debian 13, which renamed most settings) each get a configuration of their own.

Users come from a passwd-file (USERS); their Maildirs live in the temporary directory. Mail is put in a
mailbox with IMAP APPEND (`append`), as a test's own client, so no delivery agent is involved.

`DovecotServer.stop()`, `start()` and `restart()` take the server away and bring it back on the same port
and the same mail (reconnect tests); `reset_uidvalidity()` rebuilds a mailbox's UID list, so the mailbox
gets a new UIDVALIDITY and its messages new UIDs, as a restored or migrated mailbox would.

Running as root (CI, this project's machines), Dovecot refuses to run its login processes or to give mail
access as root: those run as `nobody`, which owns the Maildirs. Running as another user, every Dovecot
process runs as that user (Dovecot cannot switch users then) and nothing is chrooted.

When dovecot is not installed, the `dovecot` fixture skips its tests with the command that installs it,
except in CI (the CI variable set), where that is a failure: .ci/run was meant to install it."""

from __future__ import annotations

import contextlib
import datetime as dt
import email.message
import email.utils
import grp
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.support.processes import free_port
from workers.imap import ImapSettings, Security

DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
INSTALL_HINT = "apt-get install -y --no-install-recommends dovecot-imapd (as .ci/run does)"
# carol's password is not ASCII: IMAP LOGIN cannot send it, AUTHENTICATE PLAIN (UTF-8) can.
USERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "p\u00e4ssw\u00f6rd-\u00e9t\u00e9"}
START_TIMEOUT_SECONDS = 15
# What Dovecot announces when told to leave IDLE out (imap_capability replaces its whole list).
CAPABILITIES_WITHOUT_IDLE = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE LITERAL+ UIDPLUS UNSELECT NAMESPACE"


def find_dovecot() -> str | None:
    found = shutil.which("dovecot")
    return found or next((path for path in DOVECOT_CANDIDATES if os.access(path, os.X_OK)), None)


def dovecot_version(binary: str) -> tuple[int, ...]:
    """(2, 3, 19, 1) from `dovecot --version` ("2.3.19.1 (9b53102964)")."""
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    match = re.match(r"\s*(\d+(?:\.\d+)+)", output)
    if not match:
        raise RuntimeError(f"cannot read a version from `{binary} --version`: {output!r}")
    return tuple(int(part) for part in match.group(1).split("."))


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and a client context that trusts it."""

    cert_path: Path
    key_path: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_path))


def make_certificate(directory: Path) -> Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())  # an EC key: made in milliseconds, unlike RSA
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return Certificate(cert_path, key_path)


@dataclass(frozen=True)
class Accounts:
    """Who Dovecot's processes run as. As root: `nobody` for the login and mail processes (Dovecot refuses
    root there). Otherwise: the current user for everything, since Dovecot cannot switch users."""

    service_user: str
    service_group: str
    mail_uid: int
    mail_gid: int
    as_root: bool

    @classmethod
    def for_current_process(cls) -> Accounts:
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            return cls("nobody", grp.getgrgid(nobody.pw_gid).gr_name, nobody.pw_uid, nobody.pw_gid, True)
        me = pwd.getpwuid(os.geteuid())
        return cls(me.pw_name, grp.getgrgid(os.getegid()).gr_name, me.pw_uid, os.getegid(), False)


def dovecot_23_config(server: DovecotServer) -> str:
    """dovecot.conf for Dovecot 2.3 (Debian 12)."""
    root, accounts = server.root, server.accounts
    no_chroot = "" if accounts.as_root else "  chroot =\n"
    capability = "" if server.idle else f"imap_capability = {CAPABILITIES_WITHOUT_IDLE}\n"
    return f"""\
# Written by tests/support/imap.py for one test: nothing here is read by the system's own Dovecot.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{server.certificate.cert_path}
ssl_key = <{server.certificate.key_path}
# Tests log in on the plain port: LOGIN and AUTHENTICATE PLAIN without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
# A refused login is answered at once, not after the default 2 s meant to slow down guessing.
auth_failure_delay = 0
default_internal_user = {accounts.service_user}
default_internal_group = {accounts.service_group}
default_login_user = {accounts.service_user}
first_valid_uid = {accounts.mail_uid}
first_valid_gid = {accounts.mail_gid}
mail_location = maildir:{root}/mail/%u
{capability}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
  default_fields = uid={accounts.mail_uid} gid={accounts.mail_gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {server.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {server.tls_port}
    ssl = yes
  }}
{no_chroot}}}
service anvil {{
{no_chroot}}}
"""


def dovecot_24_config(server: DovecotServer) -> str:
    """dovecot.conf for Dovecot 2.4 (Debian 13), whose settings were renamed and regrouped."""
    root, accounts = server.root, server.accounts
    no_chroot = "" if accounts.as_root else "  chroot =\n"
    capability = "" if server.idle else "imap_capability {\n  IDLE = no\n}\n"
    return f"""\
# Written by tests/support/imap.py for one test: nothing here is read by the system's own Dovecot.
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_server_cert_file = {server.certificate.cert_path}
ssl_server_key_file = {server.certificate.key_path}
# Tests log in on the plain port: LOGIN and AUTHENTICATE PLAIN without TLS.
auth_allow_cleartext = yes
auth_mechanisms = plain login
# A refused login is answered at once, not after the default 2 s meant to slow down guessing.
auth_failure_delay = 0
default_internal_user = {accounts.service_user}
default_internal_group = {accounts.service_group}
default_login_user = {accounts.service_user}
first_valid_uid = {accounts.mail_uid}
first_valid_gid = {accounts.mail_gid}
mail_driver = maildir
mail_home = {root}/mail/%{{user}}
mail_path = {root}/mail/%{{user}}
namespace inbox {{
  inbox = yes
}}
{capability}
passdb passwd-file {{
  passwd_file_path = {root}/users
  default_password_scheme = PLAIN
}}
userdb passwd-file {{
  passwd_file_path = {root}/users
  fields {{
    uid = {accounts.mail_uid}
    gid = {accounts.mail_gid}
    home = {root}/mail/%{{user}}
  }}
}}
service imap-login {{
  inet_listener imap {{
    listen = 127.0.0.1
    port = {server.port}
  }}
  inet_listener imaps {{
    listen = 127.0.0.1
    port = {server.tls_port}
    ssl = yes
  }}
{no_chroot}}}
service anvil {{
{no_chroot}}}
"""


CONFIG_WRITERS = {(2, 3): dovecot_23_config, (2, 4): dovecot_24_config}


def email_bytes(subject: str, body: str = "Hello", *, message_id: str | None = None) -> bytes:
    message = email.message.EmailMessage()
    message["From"] = "Contact <contact@example.com>"
    message["To"] = "Sender <sender@example.com>"
    message["Subject"] = subject
    message["Message-ID"] = message_id or email.utils.make_msgid(domain="example.com")
    message["Date"] = email.utils.formatdate()
    message.set_content(body)
    return message.as_bytes().replace(b"\n", b"\r\n")


APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


@dataclass
class DovecotServer:
    """One Dovecot, its own config, mail and logs under `root`, on `port` (plain) and `tls_port` (TLS)."""

    binary: str
    root: Path
    certificate: Certificate
    idle: bool = True  # False: the server does not announce IDLE (polling clients)
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    accounts: Accounts = field(default_factory=Accounts.for_current_process)
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.version = dovecot_version(self.binary)
        write_config = CONFIG_WRITERS.get(self.version[:2])
        if write_config is None:
            raise RuntimeError(
                f"tests/support/imap.py writes configurations for Dovecot 2.3 and 2.4; Dovecot "
                f"{'.'.join(map(str, self.version))} is installed: teach it that version's settings"
            )
        self.root.chmod(0o711)  # `nobody` (login and mail processes) must reach its files inside
        (self.root / "mail").mkdir(exist_ok=True)
        os.chown(self.root / "mail", self.accounts.mail_uid, self.accounts.mail_gid)
        (self.root / "users").write_text(
            "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in USERS.items()),
            encoding="utf-8",
        )
        self.config_path = self.root / "dovecot.conf"
        self.config_path.write_text(write_config(self))

    # --- the server -------------------------------------------------------------------------------------

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [self.binary, "-F", "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "dovecot.stderr").open("ab"),
            start_new_session=True,  # its own process group: `kill` ends the master and its children at once
        )
        self._wait_until_it_answers()

    def stop(self) -> None:
        """Shut the server down as its operator would (SIGTERM: Dovecot ends its IMAP sessions and exits,
        which takes it about a second), and wait until it has."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self) -> None:
        """End the server and every process of it at once (SIGKILL), as a crash would: connections are
        cut without a word."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None
        self._wait_until_nothing_listens()

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or, with crash, kill) the server and start it again on the same ports and mail."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def _wait_until_nothing_listens(self) -> None:
        # A killed login process may hold the listening socket a moment longer than the master.
        deadline = time.monotonic() + 10
        while any(self._listens(port) for port in (self.port, self.tls_port)):
            assert time.monotonic() < deadline, "a killed dovecot still listens"
            time.sleep(0.02)

    @staticmethod
    def _listens(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.process.returncode}:\n{self.log()}")
            if self._greets():
                return
            time.sleep(0.02)
        raise RuntimeError(f"dovecot did not answer on 127.0.0.1:{self.port} in time:\n{self.log()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                return probe.recv(64).startswith(b"* OK")
        except OSError:
            return False

    def log(self) -> str:
        parts = [self.root / "dovecot.stderr", self.root / "dovecot.log"]
        return "\n".join(path.read_text(errors="replace")[-4000:] for path in parts if path.exists())

    # --- what tests use ---------------------------------------------------------------------------------

    def settings(self, user: str = "alice", security: Security = "none", **overrides) -> ImapSettings:
        """ImapSettings that reach this server as `user` (the plain port, or the TLS one for "ssl")."""
        values = {
            "host": "127.0.0.1",
            "port": self.tls_port if security == "ssl" else self.port,
            "security": security,
            "username": user,
            "password": USERS[user],
            "timeout": 5.0,
        }
        return ImapSettings(**(values | overrides))

    def client(self, user: str = "alice") -> IMAPClient:
        """A logged-in client of the test's own, on the plain port."""
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(user, USERS[user])
        return client

    def append(
        self,
        message: bytes,
        *,
        user: str = "alice",
        folder: str = "INBOX",
        received: dt.datetime | None = None,
        flags: tuple[str, ...] = (),
    ) -> int:
        """APPEND `message` (its INTERNALDATE `received`, default now); the UID Dovecot gave it."""
        with self.client(user) as client:
            answer = client.append(folder, message, flags=flags, msg_time=received)
        match = APPENDUID.search(answer)
        assert match, f"no APPENDUID in {answer!r}"
        return int(match.group(2))

    def uidvalidity(self, user: str = "alice", folder: str = "INBOX") -> int:
        with self.client(user) as client:
            return client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"]

    def flags(self, uid: int, *, user: str = "alice", folder: str = "INBOX") -> tuple[bytes, ...]:
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            return client.get_flags([uid])[uid]

    def reset_uidvalidity(self, user: str = "alice") -> int:
        """Rebuild the INBOX of `user` as a restored mailbox would be: Dovecot rescans its Maildir, gives it
        a new UIDVALIDITY and numbers its messages again from 1 (in the order they were stored). The
        server is down meanwhile. Returns the new UIDVALIDITY."""
        before = self.uidvalidity(user)
        self.kill()
        maildir = self.root / "mail" / user
        # dovecot-uidlist holds UIDVALIDITY and the UIDs; the indexes cache both. dovecot-uidvalidity*
        # (the next value to hand out) stays, so the new value differs from every earlier one.
        for path in maildir.glob("dovecot*"):
            if not path.name.startswith("dovecot-uidvalidity"):
                path.unlink()
        self.start()
        after = self.uidvalidity(user)
        assert after != before, f"UIDVALIDITY stayed {before}"
        return after


def dovecot_or_skip() -> str:
    binary = find_dovecot()
    if binary is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(f"dovecot is not installed, and CI must run the IMAP tests: {INSTALL_HINT}")
        pytest.skip(f"dovecot is not installed: {INSTALL_HINT}")
    return binary


@pytest.fixture(scope="session")
def dovecot_certificate() -> Iterator[Certificate]:
    directory = Path(tempfile.mkdtemp(prefix="drumbeat-imap-cert-"))
    try:
        yield make_certificate(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def running_dovecot(certificate: Certificate, *, idle: bool = True) -> Iterator[DovecotServer]:
    """A started DovecotServer of its own (a short path under /tmp: Dovecot's unix sockets live in it),
    stopped and removed afterwards."""
    binary = dovecot_or_skip()
    root = Path(tempfile.mkdtemp(prefix="drumbeat-dovecot-"))
    server = DovecotServer(binary, root, certificate, idle=idle)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_certificate: Certificate) -> Iterator[DovecotServer]:
    """A Dovecot of the test's own, with USERS and empty mailboxes."""
    yield from running_dovecot(dovecot_certificate)


@pytest.fixture
def dovecot_without_idle(dovecot_certificate: Certificate) -> Iterator[DovecotServer]:
    """A Dovecot that does not announce IDLE: clients must poll."""
    yield from running_dovecot(dovecot_certificate, idle=False)
