use canc_grammar::*;
#[test]
fn probe() {
    for src in [
        "letter = 1",
        "a.b = ",
        "a.b = 1 2",
        "k { a = }",
        "k { a = 1",
        "let = 3",
        "let x = 1.5e",
        "extends foo",
        "k { a = \"abc\n\" }",
        "k { a = 1..}",
        "k { a = f(1,,2) }",
        "k { a = [1 2] }",
        "a.b = 10 parsecs",
        "let true = 1",
        "k {\n  a = 1\n}}",
        "a.b = @",
        "a.b = \"\\q\"",
        "a {}\nb # c\n{ }",
        "b # c\n{ }",
        "k { a = 1 } # t",
        "let x = $true",
    ] {
        match parse_file(src, 0) {
            Ok(f) => println!("{src:?} => OK {}", print_file(&f)),
            Err(e) => println!(
                "{src:?} => {:?} {:?} {:?}",
                e.span.range(),
                e.message,
                e.expected
            ),
        }
    }
}
#[test]
fn deep() {
    for d in [16usize, 32, 64, 65] {
        let src = format!("a.b = {}1{}", "[".repeat(d), "]".repeat(d));
        let r = parse_file(&src, 0);
        println!("list depth {d}: {}", r.is_ok());
        let src = format!("{}{}", "k {\n".repeat(d), "}\n".repeat(d));
        let r = parse_file(&src, 0);
        println!(
            "block depth {d}: {}",
            r.map(|f| print_file(&f).len()).is_ok()
        );
        let src = format!("a.b = {}1{}", "f(".repeat(d), ")".repeat(d));
        let r = parse_file(&src, 0);
        println!("call depth {d}: {}", r.is_ok());
    }
}
