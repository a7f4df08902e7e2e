//! The Kubernetes stand-in's own parts, checked against the API server's documented behaviour:
//! strategic merge patches and label selectors.

use gantry_tests::kube::patch::strategic;
use gantry_tests::kube::selector::Selector;
use serde_json::json;

#[test]
fn containers_merge_by_name() {
    let mut d = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]},
        {"name": "proxy", "image": "envoy:1"}
    ]}}}});
    strategic(
        &mut d,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}}),
    );
    let containers = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "web:2");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
    assert_eq!(containers[1]["image"], "envoy:1");
}

#[test]
fn selectors_match_as_the_api_server_does() {
    let o = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
    let m = |s: &str| Selector::parse(s).expect("parses").matches(&o);
    assert!(m("app=web"));
    assert!(m("app==web,tier"));
    assert!(m("tier in (front, back)"));
    assert!(!m("tier notin (front)"));
    assert!(m("!missing"));
    assert!(!m("app!=web"));
    assert!(m(""));
}
