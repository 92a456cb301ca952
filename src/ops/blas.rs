//! An external BLAS for the large f32 matrix products, opened at run time (`dlopen`), so the
//! default build still needs nothing but cargo: `--blas PATH` (or `SCALENET_BLAS=PATH`) names a
//! CBLAS shared library — MKL's `libmkl_rt.so.*` from PyPI's `mkl` wheel, Debian's OpenBLAS
//! (`libopenblas.so.0`) or BLIS (`libblis.so.4`). On the Intel Xeon of the speed issue MKL's
//! SGEMM runs ~1.5× faster than our AVX-512 kernel (docs/PERFORMANCE.md has the table); on the
//! Zen 4 ours matches it. Without the option nothing changes.
//!
//! Only products whose operands are row- or column-major go to the library (every matmul of a
//! ViT or Llama step is one of the two); anything else, and the small products below
//! [`MIN_FLOPS`], stay on our kernels. With MKL, f32 products are cut across our own threads
//! (see [`Blas::gemm`]), so one thread pool runs the whole step.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use super::gemm_tile::{Product, View};

/// Below this many multiply-adds a library call's fixed cost (thread wake-up) outweighs its
/// speed; attention's per-head products are well below it.
pub const MIN_FLOPS: usize = 64 * 64 * 64;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

/// A CBLAS gemm (`cblas_sgemm`, or MKL's `cblas_gemm_bf16bf16f32` with bf16 operands as u16):
/// layout, two transposes, m, n, k, alpha, A, lda, B, ldb, beta, C (f32), ldc.
type CblasGemm<T> = unsafe extern "C" fn(
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    f32,
    *const T,
    c_int,
    *const T,
    c_int,
    f32,
    *mut f32,
    c_int,
);
type Sgemm = CblasGemm<f32>;
/// MKL's `cblas_gemm_bf16bf16f32`: bf16 operands (as u16), f32 accumulation and result.
type GemmBf16 = CblasGemm<u16>;

/// Why a BLAS library could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BlasError {
    #[error("{path}: cannot open as a shared library: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: no cblas_sgemm in this library (is it a CBLAS?)")]
    NoSgemm { path: PathBuf },
    #[error(
        "{path}: cblas_sgemm gives wrong results (max error {error:e}); is it an ILP64 build?"
    )]
    Wrong { path: PathBuf, error: f32 },
    #[error("a BLAS library is already in use ({0}); it can be chosen once per process")]
    AlreadySet(PathBuf),
    #[error(
        "{path}: {why}; scalenet calls the LP64 interface (32-bit integers), so use an LP64 build"
    )]
    Ilp64 { path: PathBuf, why: String },
}

/// MKL's `MKL_Set_Interface_Layer`: 0 asks for LP64; returns the layer then in use.
type SetInterfaceLayer = unsafe extern "C" fn(c_int) -> c_int;
/// OpenBLAS's `openblas_get_config`: its build options as a C string.
type GetConfig = unsafe extern "C" fn() -> *const c_char;
/// MKL's `MKL_CBWR_Set`: the conditional-numerical-reproducibility mode; 0 on success.
type CbwrSet = unsafe extern "C" fn(c_int) -> c_int;
/// `MKL_CBWR_AUTO | MKL_CBWR_STRICT` (mkl_cbwr.h).
const CBWR_AUTO_STRICT: c_int = 2 | 0x10000;

/// MKL's `MKL_Set_Num_Threads_Local`: the calling thread's thread count for MKL (0 = back
/// to the global setting); returns the previous one.
type SetThreadsLocal = unsafe extern "C" fn(c_int) -> c_int;

/// An opened CBLAS library.
pub struct Blas {
    path: PathBuf,
    sgemm: Sgemm,
    /// MKL's bf16 product, where the library has it (on CPUs with AMX it runs on the tiles).
    gemm_bf16: Option<GemmBf16>,
    /// MKL: f32 products are split across our own threads, each part sequential in MKL (see
    /// [`Blas::gemm`]).
    threads_local: Option<SetThreadsLocal>,
}

// SAFETY: a function pointer into a library that stays loaded for the process's life; CBLAS
// routines are thread-safe.
unsafe impl Send for Blas {}
unsafe impl Sync for Blas {}

static ACTIVE: OnceLock<Blas> = OnceLock::new();
/// Held while a library is chosen, so that two callers cannot both open one.
static CHOOSING: Mutex<()> = Mutex::new(());

/// The library in use, if one was chosen.
pub fn active() -> Option<&'static Blas> {
    ACTIVE.get()
}

/// The environment MKL reads when it starts, set where the user has not: call it at the start
/// of a program, before any other thread exists (`std::env::set_var` races with threads that
/// read the environment). MKL's OpenMP workers spin for 200 ms after each product by default,
/// taking the cores from our own pool, which runs everything between the products; with
/// `KMP_BLOCKTIME=0` they sleep at once.
pub fn set_env_defaults() {
    if std::env::var_os("KMP_BLOCKTIME").is_none() {
        std::env::set_var("KMP_BLOCKTIME", "0");
    }
}

/// Opens `path`, checks its `cblas_sgemm` against a small product, and routes the large f32
/// products of this process to it. The first call chooses; later ones get that library.
pub fn use_library(path: &Path) -> Result<&'static Blas, BlasError> {
    let _choosing = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = ACTIVE.get() {
        return if b.path == path {
            Ok(b)
        } else {
            Err(BlasError::AlreadySet(b.path.clone()))
        };
    }
    let blas = Blas::open(path)?;
    blas.self_check()?;
    let _ = ACTIVE.set(blas);
    Ok(ACTIVE.get().expect("just set"))
}

/// Refuses a library with 64-bit integers before any product is called: our calls pass 32-bit
/// ones, which such a library reads with garbage upper halves. MKL is asked for LP64
/// (`MKL_Set_Interface_Layer(0)` must answer 0, whatever `MKL_INTERFACE_LAYER` says); an
/// OpenBLAS says in its build options (`USE64BITINT`).
///
/// # Safety
/// `handle` is a live `dlopen` handle whose `MKL_Set_Interface_Layer` and
/// `openblas_get_config`, where present, have the documented C signatures.
unsafe fn require_lp64(handle: *mut c_void, path: &Path) -> Result<(), BlasError> {
    let refuse = |why: String| BlasError::Ilp64 {
        path: path.to_owned(),
        why,
    };
    // SAFETY: a live handle and valid symbol names.
    let (layer, config) = unsafe {
        (
            libc::dlsym(handle, c"MKL_Set_Interface_Layer".as_ptr()),
            libc::dlsym(handle, c"openblas_get_config".as_ptr()),
        )
    };
    if !layer.is_null() {
        // SAFETY: MKL's documented C signature.
        let set = unsafe { std::mem::transmute::<*mut c_void, SetInterfaceLayer>(layer) };
        // SAFETY: a plain int argument.
        let got = unsafe { set(0) };
        if got != 0 {
            return Err(refuse(format!(
                "MKL answered interface layer {got} when asked for LP64 (0)"
            )));
        }
    }
    if !config.is_null() {
        // SAFETY: OpenBLAS's documented C signature.
        let get = unsafe { std::mem::transmute::<*mut c_void, GetConfig>(config) };
        // SAFETY: OpenBLAS returns a static NUL-terminated string (or null).
        let text = unsafe { get() };
        let text = if text.is_null() {
            String::new()
        } else {
            // SAFETY: non-null and NUL-terminated (above).
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        if text.contains("USE64BITINT") {
            return Err(refuse(format!(
                "an OpenBLAS built with 64-bit integers ({text})"
            )));
        }
    }
    Ok(())
}

/// Asks MKL for bit-reproducible results (`MKL_CBWR_Set(AUTO | STRICT)`) unless the user set
/// `MKL_CBWR` to another mode; true when products are strictly reproducible, so that cutting
/// them across our threads gives the same bits. MKL's results may otherwise depend on buffer
/// alignment and thread count, and a resumed run must repeat the interrupted one bit for bit;
/// this mode cost nothing measurable.
///
/// # Safety
/// `handle` is a live `dlopen` handle whose `MKL_CBWR_Set`, where present, has MKL's signature.
unsafe fn strict_reproducibility(handle: *mut c_void) -> bool {
    if let Ok(mode) = std::env::var("MKL_CBWR") {
        return mode.to_ascii_uppercase().contains("STRICT");
    }
    // SAFETY: a live handle and a valid symbol name.
    let set = unsafe { libc::dlsym(handle, c"MKL_CBWR_Set".as_ptr()) };
    if set.is_null() {
        return false;
    }
    // SAFETY: MKL's documented C signature.
    let set = unsafe { std::mem::transmute::<*mut c_void, CbwrSet>(set) };
    // SAFETY: a plain int argument; called before any other MKL function, as MKL asks.
    unsafe { set(CBWR_AUTO_STRICT) == 0 }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message owned by libc.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: non-null, NUL-terminated (above).
        unsafe { CStr::from_ptr(msg as *const c_char) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Blas {
    fn open(path: &Path) -> Result<Blas, BlasError> {
        let open_err = |reason: String| BlasError::Open {
            path: path.to_owned(),
            reason,
        };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| open_err("the path contains a NUL byte".into()))?;
        // SAFETY: a valid C string; the handle is never closed (the library lives as long as
        // the process, as the function pointer taken from it must).
        let handle: *mut c_void = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            // dlerror starts with the path again.
            let msg = dl_error();
            let prefix = format!("{}: ", path.display());
            return Err(open_err(
                msg.strip_prefix(&prefix).unwrap_or(&msg).to_string(),
            ));
        }
        // SAFETY: a live handle and a valid symbol name.
        let sym = unsafe { libc::dlsym(handle, c"cblas_sgemm".as_ptr()) };
        if sym.is_null() {
            return Err(BlasError::NoSgemm {
                path: path.to_owned(),
            });
        }
        // SAFETY: as above.
        let bf16 = unsafe { libc::dlsym(handle, c"cblas_gemm_bf16bf16f32".as_ptr()) };
        // SAFETY: as above. (Lower-case `mkl_set_num_threads_local` is the Fortran entry, which
        // takes a pointer.)
        let local = unsafe { libc::dlsym(handle, c"MKL_Set_Num_Threads_Local".as_ptr()) };
        // SAFETY: a live handle; the symbols, where present, have these signatures.
        unsafe { require_lp64(handle, path)? };
        // SAFETY: as above.
        let strict = unsafe { strict_reproducibility(handle) };
        Ok(Blas {
            path: path.to_owned(),
            // SAFETY: CBLAS fixes cblas_sgemm's signature (LP64: int is 32 bits); the self-check
            // catches an ILP64 library before any real use.
            sgemm: unsafe { std::mem::transmute::<*mut c_void, Sgemm>(sym) },
            // SAFETY: MKL's documented signature; checked by the self-check like sgemm.
            gemm_bf16: (!bf16.is_null() && super::gemm_bf16::available())
                .then(|| unsafe { std::mem::transmute::<*mut c_void, GemmBf16>(bf16) }),
            // SAFETY: MKL's documented C signature.
            // Cut products give the same bits only in strict mode (bench/mkl_cut_check.py finds
            // up to 111k differing elements per product without it); a user's other setting
            // keeps MKL's own threading.
            threads_local: (!local.is_null() && strict)
                .then(|| unsafe { std::mem::transmute::<*mut c_void, SetThreadsLocal>(local) }),
        })
    }

    /// Whether bf16 products (`--precision bf16`) also go to the library.
    pub fn has_bf16(&self) -> bool {
        self.gemm_bf16.is_some()
    }

    /// The library's file, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A 3×5 · 5×4 product with a transposed A against a plain loop: a library with 64-bit
    /// integers reads our 32-bit ones as garbage sizes, which this catches.
    fn self_check(&self) -> Result<(), BlasError> {
        let (m, n, k) = (3usize, 4usize, 5usize);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect(); // k×m, A = aᵀ
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut c = vec![1.0f32; m * n];
        let av = View::strided(&a, 0, 1, m);
        let bv = View::strided(&b, 0, n, 1);
        let mut error = 0.0f32;
        // The operands are exact in bf16, so both products must match the loop.
        for bf16 in [false, true].into_iter().filter(|&b| !b || self.has_bf16()) {
            c.fill(1.0);
            // SAFETY: all three buffers hold the sizes described.
            let done =
                unsafe { self.gemm(Product::new(m, n, k, av, bv), c.as_mut_ptr(), n, true, bf16) };
            if !done {
                error = f32::INFINITY;
            }
            for i in 0..m {
                for j in 0..n {
                    let want = 1.0 + (0..k).map(|p| av.at(i, p) * bv.at(p, j)).sum::<f32>();
                    error = error.max((c[i * n + j] - want).abs());
                }
            }
        }
        if error.is_finite() && error <= 1e-4 {
            Ok(())
        } else {
            Err(BlasError::Wrong {
                path: self.path.clone(),
                error,
            })
        }
    }

    /// C (m rows at stride `ldc`) = A·B, or C += A·B with `accumulate`, in f32; with `bf16`,
    /// both operands rounded to bf16 (f32 accumulation), as `gemm_bf16::gemm` computes. Returns
    /// false, having done nothing, where an operand is neither row- nor column-major, a size
    /// exceeds the library's 32-bit integers, or `bf16` is asked of a library without it.
    ///
    /// With MKL the product is cut into one block of rows (or columns) per thread of our pool,
    /// each computed sequentially by MKL on that thread: MKL's own OpenMP threads, handed the
    /// cores back and forth with our pool around every product, cost DeiT-Tiny 8–12% of a
    /// training step and 18–20% of inference (docs/PERFORMANCE.md). Under `MKL_CBWR=AUTO,STRICT`
    /// (set by [`use_library`]) every element comes out with the same bits however the product
    /// is cut, so the thread count still does not change results.
    ///
    /// # Safety
    /// The views address m×k and k×n elements inside their slices; `c` addresses m rows of n
    /// floats at stride `ldc`, initialised if `accumulate`.
    pub unsafe fn gemm(
        &self,
        p: Product,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bf16: bool,
    ) -> bool {
        let Product { m, n, k, a, b } = p;
        if bf16 && !self.has_bf16() {
            return false;
        }
        // SAFETY: C by the caller's contract. (A CBLAS call with k = 0 would also ask for
        // leading dimensions of at least 1 that an empty view need not have.)
        if unsafe { p.trivial_raw(c, ldc, accumulate) } {
            return true;
        }
        p.check_extents();
        let (Some((ta, lda)), Some((tb, ldb))) = (layout(a, m, k), layout(b, k, n)) else {
            return false;
        };
        let too_big = |d: usize| d > (c_int::MAX as usize) / 2;
        if [m, n, k, lda, ldb, ldc].into_iter().any(too_big) {
            return false;
        }
        let beta = if accumulate { 1.0 } else { 0.0 };
        let (m, n, k, ldc) = (m as c_int, n as c_int, k as c_int, ldc as c_int);
        if let (true, Some(gemm)) = (bf16, self.gemm_bf16) {
            let (pa, lda) = to_bf16(a, lda, if ta == NO_TRANS { (m, k) } else { (k, m) });
            let (pb, ldb) = to_bf16(b, ldb, if tb == NO_TRANS { (k, n) } else { (n, k) });
            // SAFETY: the converted operands hold their matrices at these leading dimensions;
            // C by the caller's contract.
            unsafe {
                gemm(
                    ROW_MAJOR,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    1.0,
                    pa.as_ptr() as *const u16,
                    lda,
                    pb.as_ptr() as *const u16,
                    ldb,
                    beta,
                    c,
                    ldc,
                )
            };
            return true;
        }
        let (pa, pb) = (a.data[a.offset..].as_ptr(), b.data[b.offset..].as_ptr());
        let (lda, ldb) = (lda as c_int, ldb as c_int);
        let Some(set_local) = self
            .threads_local
            .filter(|_| rayon::current_num_threads() > 1)
        else {
            // SAFETY: by the caller's contract the operands lie inside their slices at these
            // leading dimensions; beta = 0 makes the library ignore C's old contents.
            unsafe {
                (self.sgemm)(
                    ROW_MAJOR, ta, tb, m, n, k, 1.0, pa, lda, pb, ldb, beta, c, ldc,
                )
            };
            return true;
        };
        // Cut the longer side of C; `step` moves an operand one row (or column) of C on.
        let rows = m >= n;
        let len = (if rows { m } else { n }) as usize;
        let chunk = len.div_ceil(rayon::current_num_threads());
        let step_a = if ta == NO_TRANS { lda as usize } else { 1 };
        let step_b = if tb == NO_TRANS { 1 } else { ldb as usize };
        let (pa, pb, pc) = (Shared(pa as *mut f32), Shared(pb as *mut f32), Shared(c));
        (0..len.div_ceil(chunk)).into_par_iter().for_each(|i| {
            let (start, size) = (i * chunk, chunk.min(len - i * chunk) as c_int);
            let at = |p: &Shared, step: usize| p.0.wrapping_add(start * step);
            let (a0, b0, c0, mm, nn) = if rows {
                (at(&pa, step_a), pb.0, at(&pc, ldc as usize), size, n)
            } else {
                (pa.0, at(&pb, step_b), at(&pc, 1), m, size)
            };
            // SAFETY: each part is a sub-block of the caller's product (rows or columns of C
            // with the matching rows of A or columns of B), parts write disjoint parts of C;
            // this thread's MKL thread count is restored after the call.
            unsafe {
                set_local(1);
                (self.sgemm)(
                    ROW_MAJOR, ta, tb, mm, nn, k, 1.0, a0, lda, b0, ldb, beta, c0, ldc,
                );
                set_local(0);
            }
        });
        true
    }
}

/// A raw pointer that the parts of a cut product share; each writes its own block of C.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: see `Blas::run`: reads of A and B, disjoint writes of C.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// A matrix stored as `outer` runs of `inner` contiguous floats (`ld` apart) — rows, or
/// columns for a transposed operand — rounded to bf16 into runs padded to even length, so each
/// run converts as whole pairs. Returns the pairs and the new leading dimension in bf16 units.
fn to_bf16(v: View, ld: usize, (outer, inner): (c_int, c_int)) -> (Vec<u32>, c_int) {
    let (outer, inner) = (outer as usize, inner as usize);
    let pairs = inner.div_ceil(2);
    let mut out = vec![0u32; outer * pairs];
    out.par_chunks_mut(pairs.max(1))
        .enumerate()
        .for_each(|(i, run)| {
            let start = v.offset + i * ld;
            super::gemm_bf16::convert_run(&v.data[start..start + inner], run);
        });
    (out, (2 * pairs).max(1) as c_int)
}

/// CBLAS's (transpose flag, leading dimension) for a rows×cols view in row-major terms.
fn layout(v: View, rows: usize, cols: usize) -> Option<(c_int, usize)> {
    let (rs, cs) = (v.rs, v.cs);
    if cs == 1 && rs >= cols.max(1) as isize {
        Some((NO_TRANS, rs as usize))
    } else if rs == 1 && cs >= rows.max(1) as isize {
        Some((TRANS, cs as usize))
    } else {
        None
    }
}

/// Where `--blas auto` looks, in order: MKL (the active Python environment's, pip's user site,
/// `/opt/intel`, Debian's `libmkl-rt`), then OpenBLAS and BLIS as Debian installs them. Only
/// files that exist.
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|p| PathBuf::from(p).join("lib"))
        .collect();
    if let Some(prefix) = python_prefix() {
        dirs.push(prefix.join("lib"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/lib"));
    }
    dirs.push("/opt/intel/oneapi/mkl/latest/lib".into());
    dirs.push("/opt/intel/oneapi/mkl/latest/lib/intel64".into());
    dirs.push("/usr/lib/x86_64-linux-gnu".into());
    let mut out: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| ["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"].map(|f| d.join(f)))
        .collect();
    out.extend(
        ["libopenblas.so.0", "libblis.so.4"]
            .map(|f| PathBuf::from("/usr/lib/x86_64-linux-gnu").join(f)),
    );
    out.retain(|p| p.is_file());
    out.dedup();
    out
}

/// `sys.prefix` of the `python3` on the PATH: pip installs MKL's runtime under it.
fn python_prefix() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(text.trim())).filter(|p| out.status.success() && p.is_dir())
}

/// `--blas auto`: of our kernels and the libraries [`candidates`] finds, the one whose f32
/// products run fastest on this CPU, measured once per CPU model and library on an idle
/// machine (cached under `cache_dir`; a busy machine with nothing cached keeps our kernels)
/// and put in use. Returns what runs and why. Call
/// it while the process has one thread, as [`set_env_defaults`] asks.
pub fn choose_auto(cache_dir: Option<&Path>) -> String {
    let _choosing = CHOOSING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = ACTIVE.get() {
        return format!("{} (chosen earlier)", b.path.display());
    }
    let found = candidates();
    if found.is_empty() {
        return "our kernels: no MKL, OpenBLAS or BLIS found (`pip install mkl` brings MKL)".into();
    }
    set_env_defaults();
    let cpu = super::cpu::cpu_model();
    let mut best: Option<(Blas, f64, f64)> = None;
    let mut notes = Vec::new();
    for path in found {
        let lib = match Blas::open(&path).and_then(|b| b.self_check().map(|_| b)) {
            Ok(lib) => lib,
            Err(e) => {
                notes.push(format!("{e}"));
                continue;
            }
        };
        let Some((ours, theirs)) = rates(&lib, &cpu, cache_dir) else {
            notes.push(format!(
                "{}: not timed, other work loads the cores (load {:.1}), and a timing taken now \
                 would decide by the load; name it with --blas to use it",
                path.display(),
                super::cpu::load_average().unwrap_or(0.0)
            ));
            continue;
        };
        notes.push(format!(
            "{}: {theirs:.0} GFLOP/s against our {ours:.0}",
            path.display()
        ));
        if theirs > 1.1 * ours && best.as_ref().is_none_or(|b| theirs > b.2) {
            best = Some((lib, ours, theirs));
        }
    }
    match best {
        Some((lib, _, _)) => {
            let path = lib.path.clone();
            let _ = ACTIVE.set(lib);
            format!("{} (auto: {})", path.display(), notes.join("; "))
        }
        None => format!("our kernels (auto: {})", notes.join("; ")),
    }
}

/// GFLOP/s of our f32 product and of `lib`'s on a ViT block's MLP shapes, from the cache or
/// measured now (in turns, best of five, as `--precision auto` measures); `None` when nothing
/// is cached and the machine is busy: under load our kernels (one thread per core) lose more
/// than a library does, and a 1.8× win measured so went to a library that is level on an
/// idle machine.
fn rates(lib: &Blas, cpu: &str, cache_dir: Option<&Path>) -> Option<(f64, f64)> {
    // A debug build's own kernels are several times slower than a release build's: its
    // measurement must not decide for the release binary.
    let build = if cfg!(debug_assertions) {
        ", debug build"
    } else {
        ""
    };
    let key = format!("{cpu} with {}{build}", lib.path.display());
    let file = cache_dir.map(|d| {
        let name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        d.join("scalenet").join(format!("blas-{name}.json"))
    });
    let cached = file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| Some((v["ours_gflops"].as_f64()?, v["library_gflops"].as_f64()?)));
    if cached.is_some() {
        return cached;
    }
    if super::cpu::busy() {
        return None;
    }
    let (ours, theirs) = measure(lib);
    if let Some(f) = &file {
        let json =
            serde_json::json!({"library": key, "ours_gflops": ours, "library_gflops": theirs});
        let _ = f.parent().map(std::fs::create_dir_all);
        let _ = crate::checkpoint::atomic::atomic_write(f, json.to_string().as_bytes());
    }
    Some((ours, theirs))
}

/// Times our f32 product and `lib`'s, taking turns.
fn measure(lib: &Blas) -> (f64, f64) {
    let [ours, theirs] = super::cpu::gemm_rates([
        &mut |p, c| super::gemm::cpu_gemm((p.m, p.n, p.k), p.a, p.b, c, false, false),
        &mut |p, c| {
            // SAFETY: c holds m rows of n floats; the views hold their matrices.
            let done = unsafe { lib.gemm(p, c.as_mut_ptr() as *mut f32, p.n, false, false) };
            assert!(done, "the library took the product when checked");
        },
    ]);
    (ours, theirs)
}

/// The library named by `SCALENET_BLAS`, if any, for programs that take no `--blas` flag
/// (examples, benchmarks). Call it at the start, before other threads: it sets
/// [`set_env_defaults`].
pub fn from_env() -> Result<Option<&'static Blas>, BlasError> {
    match std::env::var_os("SCALENET_BLAS") {
        Some(p) if !p.is_empty() => {
            set_env_defaults();
            use_library(Path::new(&p)).map(Some)
        }
        _ => Ok(None),
    }
}

/// Which kernel runs the large f32 products in this process, for benchmark reports.
pub fn f32_kernel() -> String {
    match active() {
        Some(lib) if lib.threads_local.is_some() => format!(
            "BLAS {} (cut across {} threads)",
            lib.path().display(),
            rayon::current_num_threads()
        ),
        Some(lib) => format!("BLAS {}", lib.path().display()),
        None if super::gemm_f32::available() => "scalenet AVX-512".into(),
        None => "gemm crate (burn-flex's)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm_tile::test_operands::{assert_product, layouts, operands};
    use super::*;

    extern "C" fn no_threads(_: c_int) -> c_int {
        0
    }

    /// The cut product (MKL's path) on any CBLAS: every part must land on its own rows or
    /// columns of C, for each operand layout, with uneven parts. Debian's OpenBLAS stands in
    /// for MKL (`.ci/run` installs it); where it is absent the test says so and passes.
    #[test]
    fn a_product_cut_across_threads_matches_the_whole() {
        let Some(path) = [
            "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
            "/usr/lib64/libopenblas.so.0",
        ]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists()) else {
            eprintln!("no OpenBLAS on this machine: the cut product is not exercised");
            return;
        };
        let mut lib = Blas::open(path).expect("OpenBLAS opens");
        lib.threads_local = Some(no_threads);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // Taller than wide (cut by rows) and wider than tall (cut by columns).
        for (m, n, k) in [(130, 70, 33), (17, 100, 40)] {
            let ops = operands(m, n, k);
            for p in layouts(&ops, (m, n, k)) {
                for acc in [false, true] {
                    // C inside a wider buffer: ldc > n.
                    let ldc = n + 3;
                    let mut c = vec![if acc { 1.0f32 } else { f32::NAN }; m * ldc];
                    // SAFETY: c holds m rows of ldc floats, initialised.
                    let ok =
                        pool.install(|| unsafe { lib.gemm(p, c.as_mut_ptr(), ldc, acc, false) });
                    assert!(ok);
                    let start = if acc { 1.0 } else { 0.0 };
                    let got = |i, j| c[i * ldc + j];
                    assert_product((m, n, k), (&ops[0], &ops[1]), |x| x, start, got);
                    for i in 0..m {
                        // The padding past n is untouched.
                        let pad = &c[i * ldc + n..(i + 1) * ldc];
                        assert!(pad.iter().all(|v| if acc { *v == 1.0 } else { v.is_nan() }));
                    }
                }
            }
        }
    }
}
