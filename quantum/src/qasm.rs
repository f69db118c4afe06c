//! OpenQASM 2 and 3 circuit statistics: width, operations, depth, two-qubit
//! gates and input parameters, counted the way Qiskit counts a loaded
//! circuit (`len(circuit.data)`, `circuit.depth()`).
//!
//! This is a statement scanner, not a full OpenQASM front end: it needs no
//! include files (gate calls count as one operation whatever their
//! definition, as in Qiskit), tolerates constructs it does not know by
//! skipping the statement, and never panics: every index is checked.
//! Control-flow bodies are counted once.
//!
//! Source comes from untrusted request bodies, so its cost is bounded by
//! [`ParseLimits`]: tokens are 8-byte spans (`max_tokens`), nested blocks
//! and control-flow bodies recurse at most `max_depth` deep, and every
//! operation is charged, before it is done, for the wires it touches after
//! broadcast, barrier width and condition bits included (`max_work`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::budget::{Budget, Hit};
use crate::{ParseError, ParseLimits};

/// What a circuit does, counted like Qiskit's `QuantumCircuit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircuitStats {
    /// `2` or `3`: from the `OPENQASM` line, else 2 if it declares `qreg`s.
    pub version: u8,
    pub qubits: u32,
    pub clbits: u32,
    /// Operations: gates, measurements, resets and barriers, one per qubit
    /// for register-wide (broadcast) statements, as in `circuit.data`.
    pub instructions: u64,
    /// Longest chain of operations over shared qubits or bits, as
    /// `circuit.depth()`: barriers add no depth but line their qubits up,
    /// conditioned operations wait for their condition's bits.
    pub depth: u64,
    /// Operations on exactly two qubits (barriers excluded).
    pub two_qubit_gates: u64,
    pub measurements: u64,
    /// `input` declarations (OpenQASM 3): the circuit's free parameters.
    pub parameters: u64,
    /// Their names, the first [`INPUT_NAMES`] (a flood of `input`s must
    /// not cost a string each).
    pub input_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Num(&'a str),
    Str,
    Punct(char),
    Arrow,
}

/// Input names kept in [`CircuitStats::input_names`].
pub const INPUT_NAMES: usize = 4096;

/// A token as stored: its bytes in the source (8 bytes where a `Tok` with
/// its line took 32: tokens are most of the scanner's memory). The kind
/// follows from the first byte, the line is counted only for an error.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

fn tokenize(src: &str, budget: &mut Budget<'_>) -> Result<Vec<Span>, ParseError> {
    let b = src.as_bytes();
    if u32::try_from(b.len()).is_err() {
        return Err(ParseError::limit(
            "qasm",
            "max_tokens",
            "source longer than 4 GiB",
        ));
    }
    let mut out = Vec::new();
    // braces are counted here too, so a flood of `{` is refused as too
    // deep at once rather than as too many tokens at the end
    let max_depth = budget.limits.max_depth;
    let mut braces = 0usize;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let c = b[i];
        match c {
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'>') => i += 2,
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80)
                {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || b[i] == b'_'
                        || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
            }
            b'{' => {
                braces += 1;
                if braces > max_depth {
                    let line = line_at(src, start);
                    return Err(ParseError::limit(
                        "qasm",
                        "max_depth",
                        format!("line {line}: blocks nested deeper than {max_depth}"),
                    ));
                }
                i += 1;
            }
            b'}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            // multi-byte UTF-8 never reaches here (>= 0x80 is an identifier byte)
            _ => i += 1,
        }
        // every span starts and ends on a char boundary: at an ASCII byte,
        // after a run of identifier bytes, or at the end
        let end = i.min(b.len());
        out.push(Span {
            start: start as u32,
            end: end as u32,
        });
        budget.token().map_err(|hit| {
            let line = line_at(src, start);
            hit.error("qasm", &format!("line {line}"))
        })?;
    }
    Ok(out)
}

/// 1-based line of byte `at`.
fn line_at(src: &str, at: usize) -> usize {
    1 + src.as_bytes()[..at.min(src.len())]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
}

/// Keywords that start a statement which is neither a gate call nor a
/// register: declarations and classical code, skipped.
const SKIPPED: &[&str] = &[
    "int",
    "uint",
    "float",
    "angle",
    "bool",
    "complex",
    "duration",
    "stretch",
    "const",
    "let",
    "array",
    "output",
    "extern",
    "return",
    "break",
    "continue",
    "end",
    "pragma",
    "include",
    "OPENQASM",
    "opaque",
    "defcalgrammar",
    "creg_alias",
];

struct Register {
    offset: u32,
    size: u32,
}

/// A qubit (`QUBIT | index`) or classical bit (`index`).
type Wire = u64;
const QUBIT: Wire = 1 << 32;

/// Hashes a wire with one multiplication: SipHash was most of the cost of
/// a wide circuit, and wires are not chosen to collide (a flood of them is
/// bounded by `max_work` anyway).
#[derive(Default)]
struct WireHasher(u64);

impl Hasher for WireHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Levels = HashMap<Wire, u64, BuildHasherDefault<WireHasher>>;

struct Scan<'a, 'm, 'l> {
    src: &'a str,
    toks: Vec<Span>,
    at: usize,
    stats: CircuitStats,
    qregs: HashMap<&'a str, Register>,
    cregs: HashMap<&'a str, Register>,
    /// Depth reached on each wire touched.
    level: Levels,
    hardware_qubits: u32,
    qasm2_registers: bool,
    /// Classical bits the current statement is conditioned on: it waits for
    /// them, as Qiskit's depth counts (a register-wide `if` waits for all).
    condition: Vec<Wire>,
    /// Blocks and control-flow bodies the cursor is inside.
    depth: usize,
    budget: &'m mut Budget<'l>,
}

/// One operand: a whole register (broadcast) or one of its bits.
#[derive(Clone, Copy)]
enum Operand {
    Whole { offset: u32, size: u32 },
    One(u32),
}

impl Operand {
    fn size(self) -> u32 {
        match self {
            Operand::Whole { size, .. } => size,
            Operand::One(_) => 1,
        }
    }
    fn at(self, i: u32) -> u32 {
        match self {
            Operand::Whole { offset, size } => offset.saturating_add(i.min(size.saturating_sub(1))),
            Operand::One(q) => q,
        }
    }
}

/// Circuit statistics of an OpenQASM 2 or 3 program, within the default
/// [`ParseLimits`].
pub fn analyze(source: &str) -> Result<CircuitStats, ParseError> {
    analyze_with(source, &ParseLimits::default())
}

/// [`analyze`] within `limits`.
pub fn analyze_with(source: &str, limits: &ParseLimits) -> Result<CircuitStats, ParseError> {
    analyze_in(source, &mut Budget::new(limits))
}

/// [`analyze`] charging `budget`, which the other circuits of the same
/// body share.
pub(crate) fn analyze_in(
    source: &str,
    budget: &mut Budget<'_>,
) -> Result<CircuitStats, ParseError> {
    let toks = tokenize(source, budget)?;
    let mut s = Scan {
        src: source,
        toks,
        at: 0,
        stats: CircuitStats {
            version: 0,
            ..Default::default()
        },
        qregs: HashMap::new(),
        cregs: HashMap::new(),
        level: Levels::default(),
        hardware_qubits: 0,
        qasm2_registers: false,
        condition: Vec::new(),
        depth: 0,
        budget,
    };
    if s.toks.is_empty() {
        return Err(ParseError::new("qasm", "empty program"));
    }
    while s.at < s.toks.len() {
        s.statement()?;
    }
    if s.stats.qubits == 0 {
        s.stats.qubits = s.hardware_qubits;
    }
    if s.stats.version == 0 {
        // no OPENQASM line: `qreg`/`creg` are OpenQASM 2's, else 3
        s.stats.version = if s.qasm2_registers { 2 } else { 3 };
    }
    if s.stats.qubits == 0 && s.stats.instructions == 0 {
        return Err(ParseError::new(
            "qasm",
            "no qubits and no operations: not a circuit",
        ));
    }
    Ok(s.stats)
}

impl<'a> Scan<'a, '_, '_> {
    fn tok(&self, i: usize) -> Option<Tok<'a>> {
        let sp = self.toks.get(i)?;
        let src: &'a str = self.src;
        let text = src.get(sp.start as usize..sp.end as usize)?;
        let first = *text.as_bytes().first()?;
        Some(match first {
            b'"' | b'\'' => Tok::Str,
            b'-' if text.len() == 2 => Tok::Arrow,
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => Tok::Ident(text),
            c if c.is_ascii_digit() || (c == b'.' && text.len() > 1) => Tok::Num(text),
            c => Tok::Punct(c as char),
        })
    }
    fn peek(&self) -> Option<Tok<'a>> {
        self.tok(self.at)
    }
    fn line(&self) -> usize {
        let i = self.at.min(self.toks.len().saturating_sub(1));
        self.toks
            .get(i)
            .map_or(0, |t| line_at(self.src, t.start as usize))
    }
    fn bump(&mut self) -> Option<Tok<'a>> {
        let t = self.peek();
        self.at += 1;
        t
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(Tok::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn err(&self, what: &str) -> ParseError {
        ParseError::new("qasm", format!("line {}: {what}", self.line()))
    }
    /// A limit hit at the cursor's line.
    fn hit(&self, hit: Hit) -> ParseError {
        hit.error("qasm", &format!("line {}", self.line()))
    }
    fn work(&mut self, units: u64) -> Result<(), ParseError> {
        self.budget.work(units).map_err(|h| self.hit(h))
    }

    /// Skip to just after the statement's `;`, or over a `{ }` block if one
    /// comes first.
    fn skip_statement(&mut self) {
        while let Some(t) = self.bump() {
            match t {
                Tok::Punct(';') => return,
                Tok::Punct('{') => {
                    self.skip_block_rest();
                    return;
                }
                _ => {}
            }
        }
    }

    /// After a `{`: skip to its matching `}` (a count, not recursion).
    fn skip_block_rest(&mut self) {
        let mut depth = 1usize;
        while let Some(t) = self.bump() {
            match t {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// Skip a balanced `( ... )` or `[ ... ]` group starting at the cursor.
    fn skip_group(&mut self, open: char, close: char) {
        if !self.eat(open) {
            return;
        }
        let mut depth = 1usize;
        while let Some(t) = self.bump() {
            if t == Tok::Punct(open) {
                depth += 1;
            } else if t == Tok::Punct(close) {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }

    fn int_in_brackets(&mut self) -> Option<u32> {
        if !self.eat('[') {
            return None;
        }
        let n = match self.bump() {
            Some(Tok::Num(n)) => n.parse::<u32>().ok(),
            _ => None,
        };
        if !self.eat(']') {
            // an expression: skip to the bracket's end
            self.at -= 1;
            self.skip_group('[', ']');
            return None;
        }
        n
    }

    /// A block or control-flow body one level further in: the one place
    /// (with [`Scan::block`]) the scan recurses, so `max_depth` bounds the stack.
    fn nested(&mut self) -> Result<(), ParseError> {
        if self.peek() == Some(Tok::Punct('{')) {
            // the block counts the level itself
            return self.statement();
        }
        self.enter()?;
        let r = self.statement();
        self.depth -= 1;
        r
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        let max = self.budget.limits.max_depth;
        if self.depth >= max {
            return Err(self.hit(Hit {
                limit: "max_depth",
                message: format!("blocks nested deeper than {max}"),
            }));
        }
        self.depth += 1;
        Ok(())
    }

    /// After a `{`: the statements up to its `}`.
    fn block(&mut self) -> Result<(), ParseError> {
        self.enter()?;
        while self.peek().is_some() && !self.eat('}') {
            self.statement()?;
        }
        self.depth -= 1;
        Ok(())
    }

    fn statement(&mut self) -> Result<(), ParseError> {
        let Some(tok) = self.peek() else {
            return Ok(());
        };
        // statements are bounded by tokens; this reads the clock now and then
        self.budget.tick(1).map_err(|h| self.hit(h))?;
        match tok {
            Tok::Punct('{') => {
                // a bare block (control-flow bodies arrive here): scan inside
                self.at += 1;
                self.block()?;
            }
            Tok::Punct(';') | Tok::Punct('}') => self.at += 1,
            Tok::Ident("OPENQASM") => {
                self.at += 1;
                if let Some(Tok::Num(v)) = self.peek() {
                    self.stats.version = if v.starts_with('2') { 2 } else { 3 };
                }
                self.skip_statement();
            }
            Tok::Ident("gate" | "def" | "defcal" | "cal") => {
                // definitions: gate calls count once, as in Qiskit
                self.skip_statement();
            }
            Tok::Ident("qreg") => {
                self.at += 1;
                self.qasm2_registers = true;
                let name = self.name()?;
                let size = self.int_in_brackets().unwrap_or(1);
                self.declare(true, name, size);
                self.skip_statement();
            }
            Tok::Ident("creg") => {
                self.at += 1;
                self.qasm2_registers = true;
                let name = self.name()?;
                let size = self.int_in_brackets().unwrap_or(1);
                self.declare(false, name, size);
                self.skip_statement();
            }
            Tok::Ident(kw @ ("qubit" | "bit")) => {
                self.at += 1;
                let size = if self.peek() == Some(Tok::Punct('[')) {
                    self.int_in_brackets().unwrap_or(1)
                } else {
                    1
                };
                let name = self.name()?;
                self.declare(kw == "qubit", name, size);
                // `bit[2] b = measure q;` declares and measures
                self.rest_of_assignment()?;
            }
            Tok::Ident("input") => {
                self.at += 1;
                let start = self.at;
                self.skip_statement();
                self.stats.parameters += 1;
                if self.stats.input_names.len() < INPUT_NAMES {
                    // the declared name is the last identifier before `;`
                    let name = (start..self.at.min(self.toks.len()))
                        .rev()
                        .find_map(|i| match self.tok(i) {
                            Some(Tok::Ident(n)) => Some(n.to_string()),
                            _ => None,
                        });
                    self.stats.input_names.extend(name);
                }
            }
            Tok::Ident("if" | "while") => self.conditional()?,
            Tok::Ident("for") => {
                // `for type name in set { body }`: the body, once
                while let Some(t) = self.peek() {
                    if t == Tok::Punct('{') || t == Tok::Punct(';') {
                        break;
                    }
                    self.at += 1;
                }
                self.nested()?;
            }
            Tok::Ident("box") => {
                self.at += 1;
                if self.peek() == Some(Tok::Punct('[')) {
                    self.skip_group('[', ']');
                }
                self.nested()?;
            }
            Tok::Ident("switch") => self.skip_statement(),
            Tok::Ident(kw) if SKIPPED.contains(&kw) => self.skip_statement(),
            Tok::Ident("barrier") => {
                self.at += 1;
                let q = self.operands()?;
                self.barrier(&q)?;
                self.skip_statement();
            }
            Tok::Ident("measure") => {
                self.at += 1;
                let q = self.operands()?;
                let c = if self.peek() == Some(Tok::Arrow) {
                    self.at += 1;
                    self.operands()?
                } else {
                    Vec::new()
                };
                self.measure(&q, &c)?;
                self.skip_statement();
            }
            Tok::Ident("reset" | "delay") => {
                self.at += 1;
                if self.peek() == Some(Tok::Punct('[')) {
                    self.skip_group('[', ']');
                }
                let q = self.operands()?;
                self.apply(&q)?;
                self.skip_statement();
            }
            Tok::Ident("gphase") => self.skip_statement(),
            Tok::Ident(_) => self.gate_or_assignment()?,
            _ => self.skip_statement(),
        }
        Ok(())
    }

    /// `if (cond) body [else body]` or `while (cond) body`. An `else if`
    /// chain is a loop here, not recursion: a long chain is not deep.
    fn conditional(&mut self) -> Result<(), ParseError> {
        let outer = self.condition.clone();
        loop {
            self.at += 1;
            let start = self.at;
            self.skip_group('(', ')');
            self.condition = self.condition_bits(&outer, start)?;
            let body = self.nested();
            self.condition.clone_from(&outer);
            body?;
            if self.peek() != Some(Tok::Ident("else")) {
                return Ok(());
            }
            self.at += 1;
            if self.peek() != Some(Tok::Ident("if")) {
                return self.nested();
            }
        }
    }

    /// `outer` and the classical bits named in the condition `( ... )` at
    /// `start`: a whole register, or `reg[i]`; each bit once, and charged
    /// (every operation under the condition touches them all).
    fn condition_bits(&mut self, outer: &[Wire], start: usize) -> Result<Vec<Wire>, ParseError> {
        // the outer bits are copied (and sorted) again for every condition
        // inside them: charged, or sibling `if`s under a wide one are free
        self.work(outer.len() as u64)?;
        let mut bits = outer.to_vec();
        for i in start..self.at.min(self.toks.len()) {
            let Some(Tok::Ident(name)) = self.tok(i) else {
                continue;
            };
            let Some(reg) = self.cregs.get(name) else {
                continue;
            };
            let (offset, size) = (reg.offset, reg.size);
            let index = match (self.tok(i + 1), self.tok(i + 2), self.tok(i + 3)) {
                (Some(Tok::Punct('[')), Some(Tok::Num(n)), Some(Tok::Punct(']'))) => {
                    n.parse::<u32>().ok().filter(|&n| n < size)
                }
                _ => None,
            };
            match index {
                Some(n) => {
                    self.work(1)?;
                    bits.push(Wire::from(offset.saturating_add(n)));
                }
                None => {
                    self.work(u64::from(size))?;
                    bits.extend((0..size).map(|b| Wire::from(offset.saturating_add(b))));
                }
            }
        }
        bits.sort_unstable();
        bits.dedup();
        Ok(bits)
    }

    fn name(&mut self) -> Result<&'a str, ParseError> {
        match self.bump() {
            Some(Tok::Ident(n)) => Ok(n),
            _ => Err(self.err("expected a register name")),
        }
    }

    fn declare(&mut self, quantum: bool, name: &'a str, size: u32) {
        let (regs, total) = if quantum {
            (&mut self.qregs, &mut self.stats.qubits)
        } else {
            (&mut self.cregs, &mut self.stats.clbits)
        };
        regs.insert(
            name,
            Register {
                offset: *total,
                size,
            },
        );
        *total = total.saturating_add(size);
    }

    /// After a declaration's name: `;`, or `= measure q;`, or `= expr;`.
    fn rest_of_assignment(&mut self) -> Result<(), ParseError> {
        if self.eat('=') && self.peek() == Some(Tok::Ident("measure")) {
            // the target is the register just declared, before `=`
            self.at += 1;
            let q = self.operands()?;
            self.measure(&q, &[])?;
        }
        self.skip_statement();
        Ok(())
    }

    /// `name(params)? operands;` is a gate call; `name[..] = measure q;` a
    /// measurement; any other assignment is classical code.
    fn gate_or_assignment(&mut self) -> Result<(), ParseError> {
        // modifiers: inv @, pow(k) @, ctrl(n) @, negctrl @
        while let Some(Tok::Ident("inv" | "pow" | "ctrl" | "negctrl")) = self.peek() {
            let save = self.at;
            self.at += 1;
            if self.peek() == Some(Tok::Punct('(')) {
                self.skip_group('(', ')');
            }
            if !self.eat('@') {
                self.at = save;
                break;
            }
        }
        let start = self.at;
        let Some(Tok::Ident(_)) = self.bump() else {
            self.skip_statement();
            return Ok(());
        };
        // an assignment target, possibly indexed
        let mut look = self.at;
        if self.tok(look) == Some(Tok::Punct('[')) {
            let save = self.at;
            self.skip_group('[', ']');
            look = self.at;
            self.at = save;
        }
        match self.tok(look) {
            Some(Tok::Punct('=')) if self.tok(look + 1) == Some(Tok::Ident("measure")) => {
                self.at = start;
                let c = self.operands()?;
                self.at = look + 2;
                let q = self.operands()?;
                self.measure(&q, &c)?;
                self.skip_statement();
                return Ok(());
            }
            Some(Tok::Punct(
                '=' | '+' | '-' | '*' | '/' | '|' | '&' | '^' | '<' | '>' | '%' | '~' | '!',
            )) => {
                self.skip_statement();
                return Ok(());
            }
            _ => {}
        }
        // a gate call: parameters, an optional duration, operands
        if self.peek() == Some(Tok::Punct('(')) {
            self.skip_group('(', ')');
        }
        if self.peek() == Some(Tok::Punct('[')) {
            self.skip_group('[', ']');
        }
        let q = self.operands()?;
        if q.is_empty() {
            // a subroutine call or an expression statement: not a gate
            self.skip_statement();
            return Ok(());
        }
        self.apply(&q)?;
        self.skip_statement();
        Ok(())
    }

    /// Operands up to `;`, `->`, `=` or `{`: registers, indexed bits, `$n`.
    fn operands(&mut self) -> Result<Vec<Operand>, ParseError> {
        let mut out = Vec::new();
        while let Some(Tok::Ident(name)) = self.peek() {
            self.at += 1;
            let op = if let Some(hw) = name.strip_prefix('$') {
                let q: u32 = hw.parse().map_err(|_| self.err("bad hardware qubit"))?;
                self.hardware_qubits = self.hardware_qubits.max(q.saturating_add(1));
                // hardware qubits sit above declared ones in the depth map
                Operand::One(u32::MAX / 2 + q.min(u32::MAX / 4))
            } else {
                let reg = self
                    .qregs
                    .get(name)
                    .or_else(|| self.cregs.get(name))
                    .map(|r| (r.offset, r.size));
                let index = if self.peek() == Some(Tok::Punct('[')) {
                    Some(self.int_in_brackets())
                } else {
                    None
                };
                match (reg, index) {
                    (Some((offset, size)), None) => Operand::Whole { offset, size },
                    (Some((offset, size)), Some(Some(i))) if i < size => {
                        Operand::One(offset.saturating_add(i))
                    }
                    (Some((offset, size)), Some(_)) => Operand::Whole { offset, size },
                    // a gate's own argument names (inside skipped bodies), or
                    // an undeclared name: one anonymous wire
                    (None, _) => Operand::One(u32::MAX - 1),
                }
            };
            out.push(op);
            if !self.eat(',') {
                break;
            }
        }
        Ok(out)
    }

    /// Broadcast: whole-register operands of size n repeat the operation n times.
    fn broadcast(ops: &[Operand]) -> u32 {
        ops.iter()
            .filter(|o| matches!(o, Operand::Whole { .. }))
            .map(|o| o.size())
            .max()
            .unwrap_or(1)
    }

    /// Charge `n` operations of `wires` wires each (plus the condition's
    /// bits) before doing any of them.
    fn charge_ops(&mut self, n: u32, wires: usize) -> Result<(), ParseError> {
        let per_op = (wires as u64).saturating_add(self.condition.len() as u64);
        self.work(u64::from(n).saturating_mul(per_op.max(1)))
    }

    fn apply(&mut self, q: &[Operand]) -> Result<(), ParseError> {
        let n = Self::broadcast(q);
        self.charge_ops(n, q.len())?;
        let mut wires = Vec::with_capacity(q.len());
        for i in 0..n {
            wires.clear();
            wires.extend(q.iter().map(|o| QUBIT | Wire::from(o.at(i))));
            self.op(&wires, q.len() == 2)?;
        }
        Ok(())
    }

    fn measure(&mut self, q: &[Operand], c: &[Operand]) -> Result<(), ParseError> {
        let n = Self::broadcast(q).max(Self::broadcast(c));
        self.charge_ops(n, q.len() + c.len())?;
        let mut wires = Vec::with_capacity(q.len() + c.len());
        for i in 0..n {
            wires.clear();
            wires.extend(q.iter().map(|o| QUBIT | Wire::from(o.at(i))));
            wires.extend(c.iter().map(|o| Wire::from(o.at(i))));
            self.op(&wires, false)?;
            self.stats.measurements += 1;
        }
        Ok(())
    }

    /// A barrier is an instruction but adds no depth: it lines its qubits
    /// up at the deepest of them (as Qiskit's depth treats directives).
    /// Without operands it spans every declared qubit. Its width is charged
    /// first: `barrier q;` over a register of a million is a million steps.
    fn barrier(&mut self, q: &[Operand]) -> Result<(), ParseError> {
        let all = [Operand::Whole {
            offset: 0,
            size: self.stats.qubits,
        }];
        let q = if q.is_empty() { &all[..] } else { q };
        let width = q.iter().map(|o| u64::from(o.size())).sum::<u64>();
        self.work(width)?;
        self.stats.instructions += 1;
        let wires = || {
            q.iter()
                .flat_map(|o| (0..o.size()).map(move |i| QUBIT | Wire::from(o.at(i))))
        };
        let level = wires()
            .map(|w| self.level.get(&w).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        for w in wires() {
            self.set_level(w, level)?;
        }
        Ok(())
    }

    /// Record `wire`'s depth; a new wire must fit in the depth map's bound.
    fn set_level(&mut self, wire: Wire, level: u64) -> Result<(), ParseError> {
        let max = self.budget.max_wires();
        if self.level.len() >= max && !self.level.contains_key(&wire) {
            return Err(self.hit(Hit {
                limit: "max_work",
                message: format!("more than {max} distinct qubits and bits touched"),
            }));
        }
        self.level.insert(wire, level);
        Ok(())
    }

    /// One operation on `wires` (already charged), waiting for the condition.
    fn op(&mut self, wires: &[Wire], two_qubit: bool) -> Result<(), ParseError> {
        self.stats.instructions += 1;
        if two_qubit {
            self.stats.two_qubit_gates += 1;
        }
        let level = wires
            .iter()
            .chain(&self.condition)
            .map(|w| self.level.get(w).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
            + 1;
        for &w in wires {
            self.set_level(w, level)?;
        }
        for i in 0..self.condition.len() {
            self.set_level(self.condition[i], level)?;
        }
        self.stats.depth = self.stats.depth.max(level);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qasm2_with_definitions_broadcast_and_measure() {
        let src = r#"
            // comment
            OPENQASM 2.0;
            include "qelib1.inc";
            gate majority a,b,c { cx c,b; cx c,a; ccx a,b,c; }
            qreg a[2]; qreg b[2];
            creg c[2];
            x a;            /* two operations */
            majority a[0],b[0],a[1];
            cx a[0], b[1];
            barrier a, b;
            measure b -> c;
        "#;
        let s = analyze(src).unwrap();
        assert_eq!(s.version, 2);
        assert_eq!((s.qubits, s.clbits), (4, 2));
        // x x majority cx barrier measure measure
        assert_eq!(s.instructions, 7);
        assert_eq!(s.two_qubit_gates, 1);
        assert_eq!(s.measurements, 2);
        // x(a0) -> majority(a0,b0,a1) -> cx(a0,b1) -> measure(b1)
        assert_eq!(s.depth, 4);
    }

    #[test]
    fn qasm3_braket_program() {
        let src = "OPENQASM 3.0;\ninput float beta;\ninput float alpha;\nbit[2] b;\nqubit[2] q;\nrx(alpha) q[0];\nrz(beta) q[1];\nh q[0];\ncnot q[0], q[1];\nb[0] = measure q[0];\nb[1] = measure q[1];";
        let s = analyze(src).unwrap();
        assert_eq!((s.version, s.qubits, s.clbits), (3, 2, 2));
        assert_eq!(s.parameters, 2);
        assert_eq!(s.input_names, vec!["beta", "alpha"]);
        assert_eq!(s.instructions, 6);
        assert_eq!(s.measurements, 2);
        assert_eq!(s.two_qubit_gates, 1);
        assert_eq!(s.depth, 4);
    }

    #[test]
    fn qasm3_modifiers_hardware_qubits_and_classical_code() {
        let src = "OPENQASM 3; include \"stdgates.inc\"; const int n = 3; float[64] t = 0.5;\n\
                   ctrl @ x $0, $3; inv @ pow(2) @ s $1; t = t * 2; for int i in [0:2] { h $2; }\n\
                   bit c; c = measure $0; if (c) { x $1; } delay[100ns] $2;";
        let s = analyze(src).unwrap();
        assert_eq!(s.qubits, 4);
        assert_eq!(s.two_qubit_gates, 1);
        // ctrl-x, s, h (loop body once), measure, x, delay
        assert_eq!(s.instructions, 6);
    }

    #[test]
    fn floods_of_inputs_and_nested_conditions_are_bounded() {
        let src = format!("qubit q; x q; {}", "input float a; ".repeat(10_000));
        let s = analyze(&src).unwrap();
        assert_eq!((s.parameters, s.input_names.len()), (10_000, INPUT_NAMES));
        // sibling conditions under a wide one copy its bits each time
        let src = format!(
            "qubit q; bit[60000] c; if (c) {{ {} }}",
            "if (c[0]) ; ".repeat(100)
        );
        let e = analyze(&src).unwrap_err();
        assert_eq!(e.limit, Some("max_work"), "{e}");
    }

    #[test]
    fn garbage_never_panics() {
        for src in [
            "",
            ";;;",
            "OPENQASM",
            "qreg",
            "qreg q[",
            "qreg q[99999999999]; x q;",
            "x q[;",
            "measure ->",
            "gate g a { x a;",
            "/* open",
            "\"open",
            "$",
            "$99999999999999 x;",
            "qubit[0] q; x q;",
            "if (",
            "for for for {",
            "a[0] = measure",
            "\u{1F600} q;",
            "qreg q[2]; cx q[5], q[1];",
            "inv @ inv @",
            "ctrl(2) @ x q;",
        ] {
            let _ = analyze(src);
        }
    }
}
