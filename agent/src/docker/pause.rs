//! The image of berth's network holders, and finding the holders of a
//! service.
//!
//! A holder only has to keep a network namespace alive, so its image is one
//! static program that waits forever: [`PAUSE_ELF`], 129 bytes of x86-64
//! machine code that calls `pause(2)` in a loop. No image can be pulled for
//! it (a host may reach no registry but its own), so the agent imports it
//! into Docker itself on first use, as [`PAUSE_IMAGE`], from a one-file tar
//! it writes in memory. As PID 1 of its namespace it ignores SIGTERM, so
//! holders are created with SIGKILL as their stop signal: stopping one is
//! immediate and loses nothing.
//!
//! Holders exist only where this program runs: on other architectures
//! [`pause_supported`] is false and services keep their own network.

use std::collections::HashMap;

use berth_core::labels;
use bollard::query_parameters::{CreateImageOptions, ListContainersOptions};
use futures::StreamExt as _;

use super::engine::Engine;
use super::error::DockerError;

/// The holders' image, imported by [`Engine::ensure_pause_image`]. The tag
/// changes whenever [`PAUSE_ELF`] does.
pub const PAUSE_IMAGE: &str = "berth-pause:1";

/// The program in [`PAUSE_IMAGE`], and the holder's command.
pub const PAUSE_COMMAND: &str = "/pause";

/// Whether this build can run network holders (the pause program is
/// x86-64 code).
pub const fn pause_supported() -> bool {
    cfg!(target_arch = "x86_64")
}

/// A static x86-64 ELF executable: the 64-byte ELF header, one loadable
/// segment (read + execute, the whole file at 0x400000) and, at its entry
/// point 0x400078, `mov eax, 34 (pause); syscall; jmp back`.
const PAUSE_ELF: [u8; 129] = {
    let mut elf = [0u8; 129];
    let header: [u8; 64] = [
        0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ident: 64-bit, little-endian, SysV
        2, 0, 0x3e, 0, 1, 0, 0, 0, // executable, x86-64, version 1
        0x78, 0, 0x40, 0, 0, 0, 0, 0, // entry 0x400078
        64, 0, 0, 0, 0, 0, 0, 0, // program headers at 64
        0, 0, 0, 0, 0, 0, 0, 0, // no section headers
        0, 0, 0, 0, 64, 0, 56, 0, // flags, header size 64, program header size 56
        1, 0, 0, 0, 0, 0, 0, 0, // one program header, no sections
    ];
    let segment: [u8; 56] = [
        1, 0, 0, 0, 5, 0, 0, 0, // PT_LOAD, R+X
        0, 0, 0, 0, 0, 0, 0, 0, // from file offset 0
        0, 0, 0x40, 0, 0, 0, 0, 0, // vaddr 0x400000
        0, 0, 0x40, 0, 0, 0, 0, 0, // paddr 0x400000
        129, 0, 0, 0, 0, 0, 0, 0, // file size
        129, 0, 0, 0, 0, 0, 0, 0, // memory size
        0, 0x10, 0, 0, 0, 0, 0, 0, // aligned to 4 KiB
    ];
    let code: [u8; 9] = [0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];
    let mut i = 0;
    while i < 64 {
        elf[i] = header[i];
        i += 1;
    }
    while i < 120 {
        elf[i] = segment[i - 64];
        i += 1;
    }
    while i < 129 {
        elf[i] = code[i - 120];
        i += 1;
    }
    elf
};

/// A tar archive of one file, `pause` (mode 0755, owned by root), holding
/// [`PAUSE_ELF`]: what `docker import` takes. Written here because it is
/// one fixed 512-byte ustar header.
fn pause_tar() -> Vec<u8> {
    let mut header = [0u8; 512];
    let mut put = |at: usize, field: &[u8]| header[at..at + field.len()].copy_from_slice(field);
    put(0, b"pause");
    put(100, b"0000755\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{:011o}\0", PAUSE_ELF.len()).as_bytes());
    put(136, b"00000000000\0");
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    put(265, b"root");
    put(297, b"root");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(&PAUSE_ELF);
    // The file padded to a whole block, then the two empty blocks that end
    // an archive.
    tar.resize(512 + PAUSE_ELF.len().div_ceil(512) * 512 + 1024, 0);
    tar
}

impl Engine {
    /// Imports [`PAUSE_IMAGE`] unless Docker has it already.
    pub async fn ensure_pause_image(&self) -> Result<(), DockerError> {
        if self.image_exists(PAUSE_IMAGE).await? {
            return Ok(());
        }
        let (repo, tag) = PAUSE_IMAGE.split_once(':').unwrap_or((PAUSE_IMAGE, "latest"));
        let options = CreateImageOptions {
            from_src: Some("-".to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let body = bollard::body_full(bytes::Bytes::from(pause_tar()));
        let mut stream = self.docker().create_image(Some(options), Some(body), None);
        while let Some(step) = stream.next().await {
            step.map_err(|e| self.fail(format!("import the network holder image {PAUSE_IMAGE}"), e))?;
        }
        tracing::info!(image = PAUSE_IMAGE, "Imported the network holder image.");
        Ok(())
    }

    /// The ids of this instance's network holders of `service`, running or
    /// not; with `running`, only those that run.
    pub async fn holders(&self, service: &str, running: bool) -> Result<Vec<String>, DockerError> {
        let mut filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}=true", labels::MANAGED),
                format!("{}={}", labels::INSTANCE, self.instance()),
                format!("{}={service}", labels::HOLDER),
            ],
        )]);
        if running {
            filters.insert("status".to_owned(), vec!["running".to_owned()]);
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = self
            .docker()
            .list_containers(Some(options))
            .await
            .map_err(|e| self.fail(format!("list the network holders of {service}"), e))?;
        Ok(found.into_iter().filter_map(|c| c.id).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_program_is_one_loadable_segment_starting_at_its_code() {
        assert_eq!(&PAUSE_ELF[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(PAUSE_ELF[24..32].try_into().expect("8 bytes"));
        assert_eq!(entry, 0x40_0000 + 120);
        let file_size = u64::from_le_bytes(PAUSE_ELF[96..104].try_into().expect("8 bytes"));
        assert_eq!(file_size, PAUSE_ELF.len() as u64);
        // syscall 34 is pause(2) on x86-64.
        assert_eq!(&PAUSE_ELF[120..129], &[0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7]);
    }

    #[test]
    fn the_tar_holds_the_program_under_a_valid_ustar_header() {
        let tar = pause_tar();
        assert_eq!(tar.len(), 512 * 4);
        assert_eq!(&tar[..6], b"pause\0");
        assert_eq!(&tar[257..263], b"ustar\0");
        // The checksum is the byte sum with its own field read as spaces.
        let mut blank = tar[..512].to_vec();
        blank[148..156].copy_from_slice(b"        ");
        let sum: u32 = blank.iter().map(|b| u32::from(*b)).sum();
        let recorded = std::str::from_utf8(&tar[148..154]).expect("octal digits");
        assert_eq!(u32::from_str_radix(recorded, 8), Ok(sum));
        assert_eq!(&tar[512..512 + 129], &PAUSE_ELF);
        assert!(tar[512 + 129..].iter().all(|b| *b == 0));
    }
}
