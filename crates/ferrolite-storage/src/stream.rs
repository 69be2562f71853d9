//! Reading blob content from a stream in bounded chunks.

use std::io::{self, Read};

use ferrolite_document::BlobDigester;

/// The size of the chunks blob content is read in.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;

/// Reads `reader` to its end in chunks of at most [`CHUNK_SIZE`] bytes, handing each chunk to
/// `sink` and to a digester, which is returned (it knows the digest and the length).
pub(crate) fn copy_chunks(
    reader: &mut dyn Read,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<BlobDigester> {
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut digester = BlobDigester::new();
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(digester),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        digester.update(chunk);
        sink(chunk)?;
    }
}
