//! The deployment files agree with the code: every configuration file under `infra/` loads
//! and validates, docker-compose only sets settings that exist, and Terraform creates the
//! tables, column families, topics and subscription the workers expect by default.
//! (`infra/validate.sh` checks the same files against their schemas.)

use std::path::{Path, PathBuf};

use tiersweep::bigtable::layout;
use tiersweep::config::Config;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_kubernetes_configuration_loads_and_validates() {
    for file in [
        "infra/k8s/base/tiersweep.toml",
        "infra/k8s/overlays/local/tiersweep.toml",
        "infra/k8s/overlays/gke/tiersweep.toml",
    ] {
        let config = Config::load(Some(Path::new(&root().join(file))), [], &[])
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            config.worker.shutdown_deadline < std::time::Duration::from_secs(30),
            "{file}: the drain must fit in terminationGracePeriodSeconds (30 s)"
        );
    }
}

#[test]
fn docker_compose_sets_only_settings_that_exist() {
    let compose = read("docker-compose.yml");
    let env: Vec<(String, String)> = compose
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(": ")?;
            k.starts_with("TIERSWEEP_")
                .then(|| (k.to_owned(), v.trim_matches('"').to_owned()))
        })
        // Provisioning-script variables, not worker settings.
        .filter(|(k, _)| !k.ends_with("_HOST") && k != "TIERSWEEP_LOCAL_DIR")
        .collect();
    assert!(env.len() > 5, "found the settings: {env:?}");
    Config::load(None, env.clone(), &[]).unwrap_or_else(|e| panic!("{e}: {env:?}"));
}

#[test]
fn terraform_creates_what_the_workers_expect() {
    let tf: String = ["bigtable.tf", "pubsub.tf"]
        .iter()
        .map(|f| read(&format!("infra/terraform/{f}")))
        .collect();
    let defaults = Config::default();
    for name in [
        defaults.pubsub.topic,
        defaults.pubsub.subscription,
        defaults.pubsub.dead_letter_topic,
    ] {
        assert!(
            tf.contains(&format!("\"{name}\"")),
            "terraform creates {name}"
        );
    }
    let vars = read("infra/terraform/variables.tf");
    for table in [
        defaults.bigtable.hv_table,
        defaults.bigtable.changelog_table,
    ] {
        assert!(vars.contains(&format!("\"{table}\"")), "table {table}");
    }
    for family in [layout::hv::DATA, layout::changelog::FAMILY] {
        assert!(
            tf.contains(&format!("family = \"{family}\"")),
            "column family {family}"
        );
    }
    assert!(tf.contains("allow_transactional_writes = true"));

    // Every GC policy Terraform sets is the one the code's layout declares; in particular
    // HV's versions get no age limit (the protocol's safety rests on no TTL).
    for (family, gc) in layout::hv_families()
        .into_iter()
        .chain(layout::changelog_families())
    {
        let block = tf
            .split("resource \"google_bigtable_gc_policy\"")
            .find(|b| b.contains(&format!("column_family   = \"{family}\"")))
            .unwrap_or_else(|| panic!("no GC policy for family {family}"));
        let block = block.split("\n}").next().unwrap_or(block);
        match gc {
            layout::Gc::MaxVersions(n) => {
                assert!(
                    block.contains(&format!("max_version {{ number = {n} }}")),
                    "{family}"
                );
                assert!(!block.contains("max_age"), "{family} must not expire");
            }
            layout::Gc::MaxAge(age) => assert!(
                block.contains(&format!(
                    "max_age {{ duration = \"{}h\" }}",
                    age.as_secs() / 3600
                )),
                "{family}"
            ),
        }
    }
}

#[test]
fn the_local_scripts_create_the_families_the_layout_declares() {
    let common = read("infra/local/common.sh");
    let families = |var: &str| -> Vec<String> {
        let line = common
            .lines()
            .find(|l| l.starts_with(&format!("{var}=")))
            .unwrap_or_else(|| panic!("{var} in infra/local/common.sh"));
        line.split('"')
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let declared = |fams: &[(&str, layout::Gc)]| -> Vec<String> {
        fams.iter()
            .map(|(family, gc)| match gc {
                layout::Gc::MaxVersions(n) => format!("{family}:maxversions={n}"),
                layout::Gc::MaxAge(age) => format!("{family}:maxage={}h", age.as_secs() / 3600),
            })
            .collect()
    };
    assert_eq!(families("HV_FAMILIES"), declared(&layout::hv_families()));
    assert_eq!(
        families("CHANGELOG_FAMILIES"),
        declared(&layout::changelog_families())
    );
}
