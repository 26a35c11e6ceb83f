//! The Kafka jars: `tools/kafka/pom.xml`'s dependencies, copied into `lib/` with Maven once
//! (`lib/.pom` records which pom they came from).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::home::Kafka;
use crate::{paths, process};

impl Kafka {
    /// Copies the jars of `tools/kafka/pom.xml` into `lib/` with Maven, unless they are there.
    pub(super) fn ensure_jars(&self) -> Result<()> {
        let pom = paths::repo_root().join("tools/kafka/pom.xml");
        let pom_text =
            fs::read_to_string(&pom).with_context(|| format!("reading {}", pom.display()))?;
        let marker = self.lib().join(".pom");
        if fs::read_to_string(&marker).ok().as_deref() == Some(pom_text.as_str()) {
            return Ok(());
        }
        if !process::on_path("mvn") {
            bail!(
                "Maven (mvn) is not installed: it fetches the Kafka jars (apt-get install maven)"
            );
        }
        println!("fetching Kafka jars from Maven Central (first run only)…");
        let begun = Instant::now();
        let staging = self.root.join("lib.partial");
        let _ = fs::remove_dir_all(&staging);
        process::run_quiet(
            Command::new("mvn")
                .args(["-q", "-B", "-f"])
                .arg(&pom)
                .arg("dependency:copy-dependencies")
                .arg(format!("-DoutputDirectory={}", staging.display()))
                .arg("-DincludeScope=runtime"),
        )
        .context("fetching the Kafka jars with Maven")?;
        if !has_jar(&staging, "kafka_2.13-") {
            bail!(
                "Maven finished but {} holds no kafka_2.13 jar",
                staging.display()
            );
        }
        let _ = fs::remove_dir_all(self.lib());
        fs::rename(&staging, self.lib())?;
        fs::write(&marker, pom_text)?;
        println!(
            "Kafka jars ready in {} ({:.0} s).",
            self.lib().display(),
            begun.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// The Kafka version pinned in `tools/kafka/pom.xml`.
pub fn kafka_version() -> Result<String> {
    let pom = fs::read_to_string(paths::repo_root().join("tools/kafka/pom.xml"))?;
    let start = pom
        .find("<kafka.version>")
        .ok_or_else(|| anyhow!("no <kafka.version> in the pom"))?
        + "<kafka.version>".len();
    let end = pom[start..]
        .find('<')
        .ok_or_else(|| anyhow!("unterminated <kafka.version>"))?;
    Ok(pom[start..start + end].trim().to_string())
}

fn has_jar(dir: &Path, prefix: &str) -> bool {
    fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with(prefix) && name.ends_with(".jar")
            })
        })
        .unwrap_or(false)
}
