//! `berth key generate`: a signing key pair in cosign's formats, made by `berth_trust`.
//!
//! The password comes from `COSIGN_PASSWORD` (as for cosign, so scripts work with both
//! tools; an empty value means no password) or from a prompt on the terminal, typed
//! twice without echo. [`read_private_key`] reads a key for `sign`, `attest` and
//! `publish --sign-key` the same way, asking once.

use std::fs::OpenOptions;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use berth_trust::PrivateKey;
use clap::{Args, Subcommand};

/// The variable cosign reads the key password from.
const PASSWORD_ENV: &str = "COSIGN_PASSWORD";

/// Manage signing keys (cosign-compatible).
#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    Generate(GenerateArgs),
}

/// Generate an ECDSA P-256 key pair: the private key encrypted with a password
/// (scrypt + NaCl secretbox, cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`), the public key
/// as PKIX PEM. cosign reads both.
///
/// Keyless signing (Fulcio certificates, Rekor entries) needs the public Sigstore
/// services and is not offered.
#[derive(Args, Debug)]
#[command(
    after_help = "The password is read from COSIGN_PASSWORD if it is set (an empty value
means no password), else asked twice on the terminal. Existing files are never overwritten.

Examples:
  berth key generate
  berth key generate --output-key release.key --output-pub release.pub
  COSIGN_PASSWORD=\"$(cat pw.txt)\" berth key generate --output-key ci.key --output-pub ci.pub

The equivalent cosign command is `cosign generate-key-pair`."
)]
pub struct GenerateArgs {
    /// Where to write the encrypted private key (created with mode 0600).
    #[arg(long, value_name = "FILE", default_value = "cosign.key")]
    output_key: PathBuf,
    /// Where to write the public key.
    #[arg(long, value_name = "FILE", default_value = "cosign.pub")]
    output_pub: PathBuf,
}

pub fn run(args: KeyArgs) -> anyhow::Result<()> {
    match args.command {
        KeyCommand::Generate(args) => {
            for path in [&args.output_key, &args.output_pub] {
                if path.exists() {
                    bail!("{} exists: not overwriting it", path.display());
                }
            }
            let password = match password_from_env()? {
                Some(password) => password,
                None => ask_new_password()?,
            };
            let fingerprint = generate(&args.output_key, &args.output_pub, password.as_bytes())?;
            println!("Private key written to {}", args.output_key.display());
            println!("Public key written to {}", args.output_pub.display());
            println!("Fingerprint (sha256 of the public key): {fingerprint}");
            Ok(())
        }
    }
}

/// Reads a private key file for signing: cosign's encrypted PEM (the password from
/// `COSIGN_PASSWORD`, else asked once on the terminal), or an unencrypted PKCS#8 or SEC1
/// PEM key.
pub fn read_private_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let password = if PrivateKey::pem_is_encrypted(&pem) {
        match password_from_env()? {
            Some(password) => password,
            None => prompt("Enter password for private key: ")?,
        }
    } else {
        String::new()
    };
    PrivateKey::from_pem(&pem, password.as_bytes())
        .with_context(|| format!("reading the private key {}", path.display()))
}

/// The key password from `COSIGN_PASSWORD`, if set (as cosign reads it).
fn password_from_env() -> anyhow::Result<Option<String>> {
    match std::env::var(PASSWORD_ENV) {
        Ok(password) => Ok(Some(password)),
        Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSWORD_ENV} is not UTF-8"),
        Err(std::env::VarError::NotPresent) => Ok(None),
    }
}

/// Makes a key pair and writes both files, refusing to replace either; returns the
/// public key's fingerprint.
fn generate(key_path: &Path, pub_path: &Path, password: &[u8]) -> anyhow::Result<String> {
    let key = PrivateKey::generate_p256()?;
    let private_pem = key.to_encrypted_pem(password)?;
    let public = key.public_key();
    write_new(key_path, private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(pub_path, public.to_pem().as_bytes(), 0o644) {
        // Leave no private key without its public key behind.
        let _ = std::fs::remove_file(key_path);
        return Err(e);
    }
    Ok(public.fingerprint())
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        // No half-written key file is left behind.
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Asks for a new password twice on the terminal.
fn ask_new_password() -> anyhow::Result<String> {
    let first = prompt("Enter password for private key: ")?;
    let second = prompt("Enter password for private key again: ")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

/// Restores the terminal's echo when dropped, whatever happens while it is off.
struct EchoOff<'a> {
    tty: &'a std::fs::File,
    saved: rustix::termios::Termios,
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            self.tty,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Reads one line from the controlling terminal without echoing it.
fn prompt(text: &str) -> anyhow::Result<String> {
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .with_context(|| format!("no terminal to ask for the password: set {PASSWORD_ENV}"))?;
    let saved = rustix::termios::tcgetattr(&tty).context("reading the terminal's settings")?;
    let mut silent = saved.clone();
    silent.local_modes.remove(rustix::termios::LocalModes::ECHO);
    rustix::termios::tcsetattr(&tty, rustix::termios::OptionalActions::Now, &silent)
        .context("turning the terminal's echo off")?;
    let _restore = EchoOff { tty: &tty, saved };
    (&tty).write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&tty).read_line(&mut line)?;
    (&tty).write_all(b"\n")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_readable_pair_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("cosign.key");
        let pub_path = dir.path().join("cosign.pub");
        let fingerprint = generate(&key_path, &pub_path, b"pw").unwrap();

        let key = PrivateKey::from_pem(&std::fs::read(&key_path).unwrap(), b"pw").unwrap();
        let public = berth_trust::PublicKey::from_pem(&std::fs::read(&pub_path).unwrap()).unwrap();
        assert_eq!(key.public_key(), public);
        assert_eq!(public.fingerprint(), fingerprint);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key_path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        let before = std::fs::read(&key_path).unwrap();
        assert!(generate(&key_path, &dir.path().join("other.pub"), b"pw").is_err());
        assert_eq!(std::fs::read(&key_path).unwrap(), before);
        assert!(!dir.path().join("other.pub").exists());
    }

    #[test]
    fn signing_keys_are_read_encrypted_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let plain = PrivateKey::generate_ed25519().unwrap();
        let plain_path = dir.path().join("plain.pem");
        std::fs::write(&plain_path, plain.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        // An unencrypted key needs no password, so nothing is asked.
        let read = read_private_key(&plain_path).unwrap();
        assert_eq!(read.public_key(), plain.public_key());
        assert!(read_private_key(&dir.path().join("missing.key"))
            .unwrap_err()
            .to_string()
            .contains("missing.key"));
    }

    #[test]
    fn a_failed_public_key_write_removes_the_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("new.key");
        let pub_path = dir.path().join("existing.pub");
        std::fs::write(&pub_path, "taken").unwrap();
        assert!(generate(&key_path, &pub_path, b"pw").is_err());
        assert!(!key_path.exists());
        assert_eq!(std::fs::read_to_string(&pub_path).unwrap(), "taken");
    }
}
