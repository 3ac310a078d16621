"""Key agreement and authenticated encryption between clients, through an untrusted relay.

Each client holds two X25519 key pairs (Bonawitz et al. 2017, sec. 4): ``c`` keys agree the
AES-GCM key that encrypts the Shamir shares a client sends to a peer via the server, and ``s``
keys agree the seed of the pair's cancelling mask. They must differ: when a client drops the
server legitimately reconstructs its ``s`` secret key, and with one key pair that would also
let it decrypt every share that client exchanged. Raw X25519 output is not uniform, so both
uses go through HKDF-SHA256 with a label naming the purpose and the round.

In active mode (Bonawitz et al. 2017, fig. 4 with the PKI) each client also holds a long-term
Ed25519 :class:`SigningKey`; its verification key reaches every other client out of band (a
registry, cid -> public key), so a relaying server can neither substitute the X25519 keys a
client advertises nor forge the signature on the survivor set of the ConsistencyCheck round.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edgeweave.train.types import TrainError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIG_BYTES = 64  # Ed25519


class KeyPair:
    """One X25519 key pair; :attr:`secret` is the 32 raw private bytes (what gets Shamir-shared)."""

    def __init__(self, secret: bytes | None = None) -> None:
        try:
            self._sk = (X25519PrivateKey.generate() if secret is None
                        else X25519PrivateKey.from_private_bytes(secret))
        except ValueError as e:
            raise TrainError(f"secagg: invalid X25519 private key: {e}") from None
        self.secret = self._sk.private_bytes_raw()
        self.public = self._sk.public_key().public_bytes_raw()

    def agree(self, peer_public: bytes, label: bytes) -> bytes:
        """32 bytes both ends derive alike: HKDF(X25519(sk, peer_pk), info=label)."""
        try:
            shared = self._sk.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as e:
            raise TrainError(f"secagg: invalid peer public key: {e}") from None
        return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=label).derive(shared)


def public_of(secret: bytes) -> bytes:
    """The public key of a private key: how a reconstructed secret is checked against the
    advertised key (a wrong Shamir share shows up here)."""
    return KeyPair(secret).public


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Raises TrainError when the ciphertext was altered or not meant for this pair and round
    (the AAD binds sender, receiver and round, so the relay cannot swap or replay shares)."""
    if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise TrainError(f"secagg: ciphertext of {len(ciphertext)} bytes is too short")
    try:
        return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)
    except InvalidTag:
        raise TrainError("secagg: a share ciphertext failed authentication") from None


class SigningKey:
    """A client's long-term Ed25519 key: signs its advertisement and its view of the survivors.
    :attr:`public` (32 bytes) is what the registry hands every other client."""

    def __init__(self, secret: bytes | None = None) -> None:
        try:
            self._sk = (Ed25519PrivateKey.generate() if secret is None
                        else Ed25519PrivateKey.from_private_bytes(secret))
        except ValueError as e:
            raise TrainError(f"secagg: invalid Ed25519 private key: {e}") from None
        self.public = self._sk.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        return self._sk.sign(message)


def verify(public: bytes, signature: bytes, message: bytes) -> bool:
    """False for a wrong signature, a malformed one, or a malformed verification key."""
    if len(public) != KEY_BYTES or len(signature) != SIG_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _framed(*parts: bytes) -> bytes:
    return b"".join(len(x).to_bytes(4, "little") + x for x in parts)


def advert_message(label: bytes, cid: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """What an advertisement's signature covers: the round, the owner and both keys (each part
    length-prefixed, so no two different tuples encode alike)."""
    return _framed(b"edgeweave-secagg advertise", label, cid.to_bytes(8, "little", signed=True),
                   c_pk, s_pk)


def consistency_message(label: bytes, survivors) -> bytes:
    """What a ConsistencyCheck signature covers: the round and the sorted survivor set U3."""
    ids = sorted(int(v) for v in survivors)
    return _framed(b"edgeweave-secagg consistency", label,
                   b"".join(v.to_bytes(8, "little", signed=True) for v in ids))
