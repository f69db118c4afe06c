//! `regexp_like` with compiled patterns kept between batches.
//!
//! DataFusion's own `regexp_like` (and the `~` operator it simplifies to)
//! compiles its pattern for every batch it evaluates. Rules and `keep`
//! predicates run over many small batches with the same few long patterns
//! (credential paths, persistence locations), so compiling was a visible
//! share of the detector's CPU. This replacement, registered in every
//! context the rules run in, compiles each distinct pattern once and
//! otherwise behaves the same (same signature, same flags, same nulls).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::{Array, ArrayRef, BooleanArray};
use arrow_schema::DataType;
use datafusion::common::types::logical_string;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    Coercion, ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, TypeSignatureClass, Volatility,
};
use regex::Regex;

/// Distinct patterns remembered at most; beyond, the cache starts over.
const MAX_PATTERNS: usize = 1024;

#[derive(Debug, PartialEq, Eq, Hash)]
struct CachedRegexpLike {
    signature: Signature,
}

/// The `regexp_like` to register in rule contexts.
pub fn regexp_like() -> ScalarUDF {
    let string = || Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
    ScalarUDF::from(CachedRegexpLike {
        signature: Signature::one_of(
            vec![
                TypeSignature::Coercible(vec![string(), string()]),
                TypeSignature::Coercible(vec![string(), string(), string()]),
            ],
            Volatility::Immutable,
        ),
    })
}

/// The compiled form of `pattern` with `flags` (as `(?flags)pattern`).
fn compiled(pattern: &str, flags: Option<&str>) -> Result<Arc<Regex>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    let key = match flags {
        Some(f) if !f.is_empty() => format!("(?{f}){pattern}"),
        _ => pattern.to_string(),
    };
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(re) = cache.get(&key) {
        return Ok(re.clone());
    }
    let re = match Regex::new(&key) {
        Ok(re) => Arc::new(re),
        Err(e) => return exec_err!("regexp_like: regular expression {key:?}: {e}"),
    };
    if cache.len() >= MAX_PATTERNS {
        cache.clear();
    }
    cache.insert(key, re.clone());
    Ok(re)
}

fn scalar_str(value: &ScalarValue) -> Option<Option<&str>> {
    match value {
        ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
            Some(s.as_deref())
        }
        _ => None,
    }
}

fn matches(values: &ArrayRef, re: &Regex) -> Option<BooleanArray> {
    use arrow_array::cast::AsArray;
    Some(match values.data_type() {
        DataType::Utf8 => values
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(|s| re.is_match(s)))
            .collect(),
        DataType::LargeUtf8 => values
            .as_string::<i64>()
            .iter()
            .map(|v| v.map(|s| re.is_match(s)))
            .collect(),
        DataType::Utf8View => values
            .as_string_view()
            .iter()
            .map(|v| v.map(|s| re.is_match(s)))
            .collect(),
        _ => return None,
    })
}

impl ScalarUDFImpl for CachedRegexpLike {
    fn name(&self) -> &str {
        "regexp_like"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match arg_types.first() {
            Some(DataType::Null) => DataType::Null,
            _ => DataType::Boolean,
        })
    }

    /// Not simplified (DataFusion's turns into `~`, compiled per batch), but
    /// a literal pattern is compiled here, so planning (`vigil rules check`)
    /// reports a bad one.
    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let literal = |e: Option<&Expr>| match e {
            Some(Expr::Literal(v, _)) => scalar_str(v).flatten().map(str::to_string),
            _ => None,
        };
        if let Some(pattern) = literal(args.get(1)) {
            compiled(&pattern, literal(args.get(2)).as_deref())?;
        }
        Ok(ExprSimplifyResult::Original(args))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // a column against a literal pattern (and flags): the rules' case
        let (values, pattern, flags) = match args.args.as_slice() {
            [ColumnarValue::Array(v), ColumnarValue::Scalar(p)] => (v, scalar_str(p), Some(None)),
            [ColumnarValue::Array(v), ColumnarValue::Scalar(p), ColumnarValue::Scalar(f)] => {
                (v, scalar_str(p), scalar_str(f))
            }
            _ => return datafusion::functions::regex::regexp_like().invoke_with_args(args),
        };
        let (Some(pattern), Some(flags)) = (pattern, flags) else {
            return datafusion::functions::regex::regexp_like().invoke_with_args(args);
        };
        if flags.is_some_and(|f| f.contains('g')) {
            return exec_err!("regexp_like() does not support the \"global\" option");
        }
        let Some(pattern) = pattern else {
            return Ok(ColumnarValue::Array(Arc::new(BooleanArray::new_null(
                values.len(),
            ))));
        };
        let re = compiled(pattern, flags)?;
        match matches(values, &re) {
            Some(result) => Ok(ColumnarValue::Array(Arc::new(result))),
            None => datafusion::functions::regex::regexp_like().invoke_with_args(args),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    #[test]
    fn behaves_as_datafusions_own() {
        let ctx = SessionContext::new();
        let ours = SessionContext::new();
        ours.register_udf(super::regexp_like());
        let sql = "SELECT regexp_like(column1, '/\\.aws/(credentials|config)$') AS a, \
                   regexp_like(column1, 'AWS', 'i') AS b, regexp_like(column1, NULL) AS c \
                   FROM (VALUES ('/home/a/.aws/credentials'), ('/tmp/x'), (NULL))";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let run = |ctx: &SessionContext| {
            rt.block_on(async {
                let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string()
            })
        };
        let theirs = run(&ctx);
        assert_eq!(run(&ours), theirs);
        assert!(theirs.contains("true"), "{theirs}");
        // a bad pattern is a planning error, as rules check needs
        let bad = rt.block_on(async {
            ours.sql("SELECT regexp_like(column1, '(unclosed') FROM (VALUES ('a'))")
                .await?
                .into_optimized_plan()
        });
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("unclosed"), "{e}");
    }
}
