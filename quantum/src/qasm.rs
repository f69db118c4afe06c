//! OpenQASM 2 and 3 circuit statistics: width, operations, depth, two-qubit
//! gates and input parameters, counted the way Qiskit counts a loaded
//! circuit (`len(circuit.data)`, `circuit.depth()`).
//!
//! This is a statement scanner, not a full OpenQASM front end: it needs no
//! include files (gate calls count as one operation whatever their
//! definition, as in Qiskit), tolerates constructs it does not know by
//! skipping the statement, and does bounded work on any input. Control-flow
//! bodies are counted once. It never panics: every index is checked.

use std::collections::HashMap;

use crate::ParseError;

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
    pub input_names: Vec<String>,
}

/// Above this many tokens the source is refused rather than scanned.
const MAX_TOKENS: usize = 20_000_000;
/// Above this many operations (after broadcast) likewise: a declared
/// register of four billion qubits must not cost four billion steps.
const MAX_OPERATIONS: u64 = 50_000_000;

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Num(&'a str),
    Str,
    Punct(char),
    Arrow,
}

fn tokenize(src: &str) -> Result<Vec<(Tok<'_>, u32)>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    line += u32::from(b[i] == b'\n');
                    i += 1;
                }
                i += 2;
            }
            b'"' | b'\'' => {
                let quote = c;
                i += 1;
                while i < b.len() && b[i] != quote {
                    line += u32::from(b[i] == b'\n');
                    i += 1;
                }
                i += 1;
                out.push((Tok::Str, line));
            }
            b'-' if b.get(i + 1) == Some(&b'>') => {
                out.push((Tok::Arrow, line));
                i += 2;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c >= 0x80 => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80)
                {
                    i += 1;
                }
                out.push((Tok::Ident(&src[start..i]), line));
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'.'
                        || b[i] == b'_'
                        || ((b[i] == b'-' || b[i] == b'+') && matches!(b[i - 1], b'e' | b'E')))
                {
                    i += 1;
                }
                out.push((Tok::Num(&src[start..i]), line));
            }
            _ => {
                // multi-byte UTF-8 never reaches here (>= 0x80 is an identifier byte)
                out.push((Tok::Punct(c as char), line));
                i += 1;
            }
        }
        if out.len() > MAX_TOKENS {
            return Err(ParseError::new("qasm", "circuit too large to analyse"));
        }
    }
    Ok(out)
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

struct Scan<'a> {
    toks: Vec<(Tok<'a>, u32)>,
    at: usize,
    stats: CircuitStats,
    qregs: HashMap<&'a str, Register>,
    cregs: HashMap<&'a str, Register>,
    /// Depth reached on each qubit, then each clbit (after the qubits).
    level: HashMap<(bool, u32), u64>,
    hardware_qubits: u32,
    qasm2_registers: bool,
    /// Classical bits the current statement is conditioned on: it waits for
    /// them, as Qiskit's depth counts (a register-wide `if` waits for all).
    condition: Vec<(bool, u32)>,
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

/// Circuit statistics of an OpenQASM 2 or 3 program.
pub fn analyze(source: &str) -> Result<CircuitStats, ParseError> {
    let toks = tokenize(source)?;
    let mut s = Scan {
        toks,
        at: 0,
        stats: CircuitStats {
            version: 0,
            ..Default::default()
        },
        qregs: HashMap::new(),
        cregs: HashMap::new(),
        level: HashMap::new(),
        hardware_qubits: 0,
        qasm2_registers: false,
        condition: Vec::new(),
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

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<&Tok<'a>> {
        self.toks.get(self.at).map(|t| &t.0)
    }
    fn peek_at(&self, n: usize) -> Option<&Tok<'a>> {
        self.toks.get(self.at + n).map(|t| &t.0)
    }
    fn line(&self) -> u32 {
        self.toks
            .get(self.at.min(self.toks.len().saturating_sub(1)))
            .map_or(0, |t| t.1)
    }
    fn bump(&mut self) -> Option<Tok<'a>> {
        let t = self.toks.get(self.at).map(|t| t.0.clone());
        self.at += 1;
        t
    }
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn err(&self, what: &str) -> ParseError {
        ParseError::new("qasm", format!("line {}: {what}", self.line()))
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

    /// After a `{`: skip to its matching `}`.
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

    fn statement(&mut self) -> Result<(), ParseError> {
        let Some(tok) = self.peek().cloned() else {
            return Ok(());
        };
        match tok {
            Tok::Punct('{') => {
                // a bare block (control-flow bodies arrive here): scan inside
                self.at += 1;
                while self.peek().is_some() && !self.eat('}') {
                    self.statement()?;
                }
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
                let size = if self.peek() == Some(&Tok::Punct('[')) {
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
                // the declared name is the last identifier before `;`
                let name = self.toks[start..self.at.min(self.toks.len())]
                    .iter()
                    .rev()
                    .find_map(|t| match t.0 {
                        Tok::Ident(n) => Some(n.to_string()),
                        _ => None,
                    });
                self.stats.parameters += 1;
                self.stats.input_names.extend(name);
            }
            Tok::Ident("if" | "while") => {
                self.at += 1;
                let start = self.at;
                self.skip_group('(', ')');
                let bits = self.condition_bits(start);
                let outer = std::mem::replace(&mut self.condition, bits);
                self.statement()?;
                self.condition = outer;
                if self.peek() == Some(&Tok::Ident("else")) {
                    self.at += 1;
                    self.statement()?;
                }
            }
            Tok::Ident("for") => {
                // `for type name in set { body }`: the body, once
                while let Some(t) = self.peek() {
                    if *t == Tok::Punct('{') {
                        break;
                    }
                    if *t == Tok::Punct(';') {
                        break;
                    }
                    self.at += 1;
                }
                self.statement()?;
            }
            Tok::Ident("box") => {
                self.at += 1;
                if self.peek() == Some(&Tok::Punct('[')) {
                    self.skip_group('[', ']');
                }
                self.statement()?;
            }
            Tok::Ident("switch") => self.skip_statement(),
            Tok::Ident(kw) if SKIPPED.contains(&kw) => self.skip_statement(),
            Tok::Ident("barrier") => {
                self.at += 1;
                let q = self.operands()?;
                self.barrier(&q);
                self.skip_statement();
            }
            Tok::Ident("measure") => {
                self.at += 1;
                let q = self.operands()?;
                let c = if self.peek() == Some(&Tok::Arrow) {
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
                if self.peek() == Some(&Tok::Punct('[')) {
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

    /// The classical bits named in the condition `( ... )` at `start`: a
    /// whole register, or `reg[i]`.
    fn condition_bits(&self, start: usize) -> Vec<(bool, u32)> {
        let mut bits = self.condition.clone();
        let toks = &self.toks[start.min(self.toks.len())..self.at.min(self.toks.len())];
        for (i, t) in toks.iter().enumerate() {
            let Tok::Ident(name) = t.0 else { continue };
            let Some(reg) = self.cregs.get(name) else {
                continue;
            };
            let index = match (toks.get(i + 1), toks.get(i + 2), toks.get(i + 3)) {
                (
                    Some((Tok::Punct('['), _)),
                    Some((Tok::Num(n), _)),
                    Some((Tok::Punct(']'), _)),
                ) => n.parse::<u32>().ok().filter(|&n| n < reg.size),
                _ => None,
            };
            match index {
                Some(n) => bits.push((false, reg.offset.saturating_add(n))),
                None => bits.extend(
                    (0..reg.size.min(1 << 16)).map(|b| (false, reg.offset.saturating_add(b))),
                ),
            }
        }
        bits
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
        if self.eat('=') && self.peek() == Some(&Tok::Ident("measure")) {
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
        while let (Some(Tok::Ident("inv" | "pow" | "ctrl" | "negctrl")), _) =
            (self.peek(), self.peek_at(1))
        {
            let save = self.at;
            self.at += 1;
            if self.peek() == Some(&Tok::Punct('(')) {
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
        if self.toks.get(look).map(|t| &t.0) == Some(&Tok::Punct('[')) {
            let save = self.at;
            self.skip_group('[', ']');
            look = self.at;
            self.at = save;
        }
        match self.toks.get(look).map(|t| &t.0) {
            Some(Tok::Punct('='))
                if self.toks.get(look + 1).map(|t| &t.0) == Some(&Tok::Ident("measure")) =>
            {
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
        if self.peek() == Some(&Tok::Punct('(')) {
            self.skip_group('(', ')');
        }
        if self.peek() == Some(&Tok::Punct('[')) {
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
            let name = *name;
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
                let index = if self.peek() == Some(&Tok::Punct('[')) {
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

    fn budget(&self, n: u32) -> Result<(), ParseError> {
        if self.stats.instructions + u64::from(n) > MAX_OPERATIONS {
            return Err(self.err("circuit too large to analyse"));
        }
        Ok(())
    }

    fn apply(&mut self, q: &[Operand]) -> Result<(), ParseError> {
        let n = Self::broadcast(q);
        self.budget(n)?;
        for i in 0..n {
            let wires: Vec<(bool, u32)> = q.iter().map(|o| (true, o.at(i))).collect();
            self.op(&wires, q.len() == 2);
        }
        Ok(())
    }

    fn measure(&mut self, q: &[Operand], c: &[Operand]) -> Result<(), ParseError> {
        let n = Self::broadcast(q).max(Self::broadcast(c));
        self.budget(n)?;
        for i in 0..n {
            let mut wires: Vec<(bool, u32)> = q.iter().map(|o| (true, o.at(i))).collect();
            wires.extend(c.iter().map(|o| (false, o.at(i))));
            self.op(&wires, false);
            self.stats.measurements += 1;
        }
        Ok(())
    }

    /// A barrier is an instruction but adds no depth: it lines its qubits
    /// up at the deepest of them (as Qiskit's depth treats directives).
    /// Without operands it spans every declared qubit.
    fn barrier(&mut self, q: &[Operand]) {
        self.stats.instructions += 1;
        let wires: Vec<(bool, u32)> = if q.is_empty() {
            (0..self.stats.qubits.min(1 << 20))
                .map(|i| (true, i))
                .collect()
        } else {
            q.iter()
                .flat_map(|o| (0..o.size().min(1 << 20)).map(move |i| (true, o.at(i))))
                .collect()
        };
        let level = wires
            .iter()
            .map(|w| self.level.get(w).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        for w in wires {
            self.level.insert(w, level);
        }
    }

    fn op(&mut self, wires: &[(bool, u32)], two_qubit: bool) {
        self.stats.instructions += 1;
        if two_qubit {
            self.stats.two_qubit_gates += 1;
        }
        let all = || wires.iter().chain(self.condition.iter());
        let level = all()
            .map(|w| self.level.get(w).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
            + 1;
        let touched: Vec<(bool, u32)> = all().copied().collect();
        for w in touched {
            self.level.insert(w, level);
        }
        self.stats.depth = self.stats.depth.max(level);
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
