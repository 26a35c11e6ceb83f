//! The KRaft storage: formatted (with the SCRAM user) on the first start, and again when the
//! cluster id, the credentials or the controller endpoint changed.

use std::fs;

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::config::{parse_properties, Secrets};
use super::home::Kafka;
use crate::process;

impl Kafka {
    /// The contents `format.state` must have for the current settings and cluster id.
    pub(super) fn format_state(&self, cluster_id: &str, secrets: &Secrets) -> String {
        format!(
            "cluster.id={cluster_id}\nsecrets.id={}\ncontroller=127.0.0.1:{}\nnode={}\nvoters={:?}\n",
            secrets.id, self.ports.controller, self.member.id, self.member.voters
        )
    }

    /// Formats the storage (first run, or after the cluster id, credentials or controller
    /// endpoint changed, or when `meta.properties` is missing/mismatched): wipes `data/`. A
    /// cluster's nodes pass their shared `cluster_id`; a single broker makes one up.
    pub(super) fn format_if_needed(
        &self,
        secrets: &Secrets,
        cluster_id: Option<&str>,
    ) -> Result<()> {
        let state_path = self.config_dir().join("format.state");
        let state = fs::read_to_string(&state_path).unwrap_or_default();
        let recorded = parse_properties(&state);
        let meta = fs::read_to_string(self.data().join("meta.properties")).unwrap_or_default();
        let on_disk = parse_properties(&meta).get("cluster.id").cloned();
        if let Some(id) = recorded.get("cluster.id") {
            let same_cluster = cluster_id.map_or(true, |wanted| wanted == id);
            if same_cluster
                && on_disk.as_deref() == Some(id.as_str())
                && state == self.format_state(id, secrets)
            {
                return Ok(());
            }
            if on_disk.is_some() {
                println!("the broker storage does not match its settings: re-formatting it");
            }
        }
        let cluster_id = match cluster_id {
            Some(id) => id.to_string(),
            None => new_cluster_id()?,
        };
        fs::remove_dir_all(self.data())
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("removing {}", self.data().display()))?;
        fs::create_dir_all(self.data())?;
        let mut cmd = self.java()?;
        cmd.arg("-Xmx256m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.config_dir().join("tools-log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(self.classpath())
            .args(["kafka.tools.StorageTool", "format"])
            .args(["--cluster-id", &cluster_id]);
        if !self.member.clustered() {
            // A cluster's quorum is its static voters (`controller.quorum.voters`).
            cmd.arg("--standalone");
        }
        cmd.arg("--config")
            .arg(self.server_properties())
            .arg("--add-scram")
            .arg(format!(
                "SCRAM-SHA-512=[name={},password={}]",
                secrets.scram_user, secrets.scram_password
            ));
        // The output names the directory and metadata version only, never the password.
        process::run_quiet(&mut cmd).context("formatting the Kafka storage")?;
        process::write_file(&state_path, &self.format_state(&cluster_id, secrets), 0o644)?;
        println!(
            "formatted KRaft storage (cluster id {cluster_id}) in {}",
            self.data().display()
        );
        Ok(())
    }
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'
/// (what `kafka-storage.sh random-uuid` prints).
pub(super) fn new_cluster_id() -> Result<String> {
    loop {
        let id = URL_SAFE_NO_PAD.encode(process::random_bytes(16)?);
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters_not_starting_with_a_dash() {
        let id = new_cluster_id().unwrap();
        assert_eq!(id.len(), 22);
        assert!(!id.starts_with('-'));
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
