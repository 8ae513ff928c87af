//! Components shaped by hand to take more than their share of the host: a built plugin with
//! one more core module appended (sections after the component's own), the module holding a
//! memory or a function that is slow to compile.

/// `n` as unsigned LEB128.
pub fn leb(mut n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A section: its id, its length, its body.
pub fn section(id: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend(leb(body.len() as u32));
    out.extend(body);
    out
}

/// `component` with the core `module` appended and `instances` instances of it.
pub fn with_extra_module(component: &[u8], module: &[u8], instances: u32) -> Vec<u8> {
    assert_eq!(&component[4..8], b"\x0d\x00\x01\x00", "a component");
    // The new module's index is the number of core modules before it.
    let (mut at, mut modules) = (8, 0u32);
    while at < component.len() {
        let id = component[at];
        at += 1;
        let (mut size, mut shift) = (0usize, 0);
        loop {
            let byte = component[at];
            at += 1;
            size |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        modules += u32::from(id == 1);
        at += size;
    }
    let mut out = component.to_vec();
    out.extend(section(1, module));
    let mut entries = leb(instances);
    for _ in 0..instances {
        entries.push(0); // instantiate
        entries.extend(leb(modules));
        entries.push(0); // with no arguments
    }
    out.extend(section(2, &entries));
    out
}

/// A core module defining a memory of `pages` (none when 0), and nothing else.
pub fn module_with_memory(pages: u32) -> Vec<u8> {
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    if pages > 0 {
        let mut memory = vec![1, 0];
        memory.extend(leb(pages));
        module.extend(section(5, &memory));
    }
    module
}

/// A core module with one function of `locals` 64-bit locals, each incremented in a loop, so
/// all are live across its back edge: 50,000 take Cranelift about 45 s and 1.2 GB of address
/// space to compile on the project's machine (20,000, half a second), in a file of 0.5 MB.
pub fn module_slow_to_compile(locals: u32) -> Vec<u8> {
    let mut code = vec![1];
    code.extend(leb(locals));
    code.push(0x7e); // i64
    code.extend([0x03, 0x40]); // loop
    for local in 0..locals {
        code.push(0x20); // local.get
        code.extend(leb(local));
        code.extend([0x42, 0x01, 0x7c]); // i64.const 1, i64.add
        code.push(0x21); // local.set
        code.extend(leb(local));
    }
    code.extend([0x20, 0x00, 0x50, 0x0d, 0x00]); // local.get 0, i64.eqz, br_if 0
    code.extend([0x0b, 0x0b]); // end (loop), end (function)
    let mut body = leb(code.len() as u32);
    body.extend(code);
    let mut functions = leb(1);
    functions.extend(body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend(section(1, b"\x01\x60\x00\x00")); // one type: [] -> []
    module.extend(section(3, b"\x01\x00")); // one function of it
    module.extend(section(10, &functions));
    module
}

/// A `component-type` custom section's payload as wit-component writes it for the package
/// `a:p12345` with `world w { export fx12345: func(); }`: the five digits are replaced to
/// make each section a package of its own (same length, so still well formed).
const COMPONENT_TYPE_12345: &str = concat!(
    "0061736d0d0001000019167769742d636f6d706f6e656e742d656e636f64696e",
    "6704000726014102014102014000010004000766783132333435010004000a61",
    "3a7031323334352f7704000b0701000177030000002f0970726f647563657273",
    "010c70726f6365737365642d6279010d7769742d636f6d706f6e656e7407302e",
    "3235342e32",
);

/// A core module of nothing but `sections` `component-type` custom sections, each a tiny
/// package of its own: adapting it to a component (wit-component merges the sections' worlds
/// one by one, each merge looking at every export so far) takes more than quadratic time,
/// about 6 s for 4,000 sections in a release build.
pub fn module_slow_to_adapt(sections: u32) -> Vec<u8> {
    let template = crate::unhex(COMPONENT_TYPE_12345).expect("hex");
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    for i in 0..sections {
        let digits = format!("{i:05}");
        let mut payload = template.clone();
        for at in 0..payload.len() - 4 {
            if &payload[at..at + 5] == b"12345" {
                payload[at..at + 5].copy_from_slice(digits.as_bytes());
            }
        }
        let name = format!("component-type:{i}");
        let mut body = leb(name.len() as u32);
        body.extend(name.as_bytes());
        body.extend(payload);
        module.extend(section(0, &body));
    }
    module
}

/// `n` as signed LEB128.
fn sleb(mut n: i64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0) {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A core module with a memory of 257 pages holding one byte at its start and one 16 MiB
/// on: nearly empty, but compiled (for the engine that maps memory images) to a 16 MiB image.
pub fn module_with_a_sparse_image() -> Vec<u8> {
    let mut memory = vec![1, 0];
    memory.extend(leb(257));
    let mut data = leb(2);
    for offset in [0i64, (16 << 20) - 70_000] {
        data.extend([0, 0x41]); // active, memory 0, i32.const
        data.extend(sleb(offset));
        data.extend([0x0b, 1, 0xff]); // end; one byte
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend(section(5, &memory));
    module.extend(section(11, &data));
    module
}

/// `component` with `modules` of [`module_with_a_sparse_image`] (never instantiated) and
/// a custom section making the file `pad_to` bytes or more: a file that size is compiled for
/// the engine that maps memory images, and compiles to `modules` × 16 MiB.
pub fn with_sparse_images(component: &[u8], modules: u32, pad_to: usize) -> Vec<u8> {
    let mut out = component.to_vec();
    for _ in 0..modules {
        out = with_extra_module(&out, &module_with_a_sparse_image(), 0);
    }
    let padding = pad_to.saturating_sub(out.len());
    let mut custom = leb(3);
    custom.extend(b"pad");
    custom.extend(std::iter::repeat_n(0u8, padding));
    out.extend(section(0, &custom));
    out
}
