//! `deploy/topics.txt` is generated from the topic table of `contracts::topics` (names and
//! configs): the shell scripts of the deploy read it, so it must not drift. Regenerate with
//! `UPDATE_TOPICS=1 cargo test -p contracts --test topics`.

use std::path::PathBuf;

#[test]
fn deploy_topics_txt_is_generated_from_the_table() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/topics.txt");
    let generated = contracts::topics::deploy_table();
    if std::env::var_os("UPDATE_TOPICS").is_some() {
        std::fs::write(&path, &generated).expect("write deploy/topics.txt");
    }
    let committed = std::fs::read_to_string(&path).expect("read deploy/topics.txt");
    assert_eq!(
        committed, generated,
        "deploy/topics.txt drifted; regenerate with `UPDATE_TOPICS=1 cargo test -p contracts --test topics`"
    );
}
