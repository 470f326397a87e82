//! Parses a file and prints it canonically: `cargo run -p canc-grammar --example roundtrip FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: roundtrip FILE");
    let text = std::fs::read_to_string(&path).expect("readable file");
    match canc_grammar::parse_file(&text, 0) {
        Ok(ast) => print!("{}", canc_grammar::print_file(&ast)),
        Err(e) => eprintln!("{path}: {:?}", e),
    }
}
