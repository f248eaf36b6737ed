//! The hand-written declarations of `nvmf_rdma::sys` against rdma-core's real headers: a
//! C program compiled with `cc` prints the size, offset or value of every entry of
//! `sys::layout_table()` and each must equal Rust's `size_of` / `offset_of!` / constant.
//!
//! Missing headers FAIL this test (scripts/install-deps.sh installs libibverbs-dev and
//! librdmacm-dev); only a machine without a C compiler skips it.

use std::io::Write;
use std::process::Command;

#[test]
fn declarations_match_rdma_core_headers() {
    let table = nvmf_rdma::sys::layout_table();
    assert!(table.len() > 100, "the table lost entries: {}", table.len());

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("SKIP: no C compiler ({cc}) to check the layout with");
        return;
    }
    for h in [
        "/usr/include/infiniband/verbs.h",
        "/usr/include/rdma/rdma_cma.h",
    ] {
        assert!(
            std::path::Path::new(h).exists(),
            "{h} is missing: run scripts/install-deps.sh (apt-get install libibverbs-dev librdmacm-dev)"
        );
    }

    let dir = std::env::temp_dir().join(format!("nvmf-rdma-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include <infiniband/verbs.h>\n\
         #include <rdma/rdma_cma.h>\nint main(void) {\n",
    );
    for (expr, _) in &table {
        c.push_str(&format!("    printf(\"%zu\\n\", (size_t)({expr}));\n"));
    }
    c.push_str("    return 0;\n}\n");
    std::fs::File::create(&src)
        .unwrap()
        .write_all(c.as_bytes())
        .unwrap();
    let out = Command::new(&cc)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the layout program");
    assert!(run.status.success());
    let lines: Vec<usize> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(lines.len(), table.len());
    let bad: Vec<String> = table
        .iter()
        .zip(&lines)
        .filter(|((_, rust), c)| rust != *c)
        .map(|((expr, rust), c)| format!("{expr}: C {c}, Rust {rust}"))
        .collect();
    assert!(bad.is_empty(), "layout mismatches:\n{}", bad.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("{} sizes/offsets/constants match the headers", table.len());
}
