fn main() {
    let v: Vec<i32> = Vec::new();
    let i = std::env::args().count() + 9;
    println!("{}", v[i]); // panics: exit status 101
}
