//! `--report` and `--sbom` as files: checked before the build by the rules of `-o`
//! ([`crate::output`]), and written after the image the same way.

use std::path::Path;

use super::Report;
use crate::output::{self, Inputs, OutputError};
use crate::progress::Progress;

/// Refuses a `--report` or `--sbom` path that `-o` could not be (a device, a
/// folder, an input of the build: `taken`), or that is the image or the other one.
pub(crate) fn check(
    mut taken: Inputs,
    image: &Path,
    report: Option<&Path>,
    sbom: Option<&Path>,
) -> Result<(), OutputError> {
    let mut names = vec![("the image (-o)", image)];
    for (what, record) in [
        ("the report (--report)", report),
        ("the SBOM (--sbom)", sbom),
    ] {
        let Some(record) = record else { continue };
        for (other, path) in &names {
            taken.file(*other, path);
            // Compared as written too: neither may exist yet.
            if *path == record {
                return Err(OutputError::IsInput {
                    path: record.to_path_buf(),
                    what: other.to_string(),
                    input: path.to_path_buf(),
                });
            }
        }
        output::check(record, &taken)?;
        names.push((what, record));
    }
    Ok(())
}

/// Writes the report and the SBOM where asked.
pub(crate) fn write(
    report: &Report,
    report_path: Option<&Path>,
    sbom_path: Option<&Path>,
    progress: &Progress,
) -> Result<(), OutputError> {
    if let Some(path) = report_path {
        output::write_file(path, report.to_json().as_bytes())?;
        progress.step(&format!("wrote the build report {}", path.display()));
    }
    if let Some(path) = sbom_path {
        output::write_file(path, super::sbom::document(report).as_bytes())?;
        progress.step(&format!("wrote the SBOM {}", path.display()));
    }
    Ok(())
}
