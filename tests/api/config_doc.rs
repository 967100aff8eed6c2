//! packaging/gatehouse.toml documents every configuration key and loads as it stands.

use crate::helpers::repo_root;
use gatehouse::config::{Config, Sources};

fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                serde_json::Value::Object(_) => key_paths(v, &path, out),
                _ => out.push(path),
            }
        }
    }
}

#[test]
fn example_config_loads_and_documents_every_key() {
    let file = repo_root().join("packaging/gatehouse.toml");
    let text = std::fs::read_to_string(&file).expect("packaging/gatehouse.toml exists");
    let config = Config::load(&Sources { file: Some(file.clone()), env: vec![] }).expect("the example loads");
    config.validate().expect("the example validates");

    let mut keys = Vec::new();
    key_paths(&serde_json::to_value(Config::default()).unwrap(), "", &mut keys);
    assert!(keys.len() >= 15, "{keys:?}");
    for key in keys {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key.as_str()));
        let written = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{name} =")) || l.starts_with(&format!("{name}="))
        });
        assert!(written, "packaging/gatehouse.toml does not show key `{key}`");
        let env = if section.is_empty() {
            format!("GATEHOUSE_{}", name.to_uppercase())
        } else {
            format!("GATEHOUSE_{}__{}", section.replace('.', "__").to_uppercase(), name.to_uppercase())
        };
        assert!(text.contains(&env), "packaging/gatehouse.toml does not name the variable {env}");
        if !section.is_empty() {
            assert!(text.contains(&format!("[{section}]")), "section [{section}] missing");
        }
    }
}
