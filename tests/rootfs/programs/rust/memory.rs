// Allocates and touches 1 GiB, far above the run's limit.
fn main() {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for _ in 0..1024 {
        chunks.push(vec![b'x'; 1 << 20]);
    }
    println!("allocated {} MiB", chunks.len());
}
