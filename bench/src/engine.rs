//! The `docker` CLI, as the docker and apps benches drive the engine beside Strata.

use anyhow::{Context, bail};

/// Runs `docker ARGS`; its trimmed stdout, or its stderr as the error.
pub async fn docker_cli(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .context("cannot run the docker CLI")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes (with force) every container carrying `label`.
/// Fails clearly when `image` is not on the engine (no registry is reachable: the
/// benches run the locally built test image).
pub async fn ensure_image(image: &str) -> anyhow::Result<()> {
    docker_cli(&["image", "inspect", image])
        .await
        .with_context(|| {
            format!(
                "image {image} is not on the engine (scripts/docker-setup.sh builds the test image)"
            )
        })?;
    Ok(())
}

pub async fn docker_rm_labelled(label: &str) -> anyhow::Result<()> {
    let ids = docker_cli(&["ps", "-aq", "--filter", &format!("label={label}")]).await?;
    let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
    if !ids.is_empty() {
        let mut a = vec!["rm", "-f"];
        a.extend(ids);
        docker_cli(&a).await?;
    }
    Ok(())
}
