//! Four f32 lanes: wasm's 128-bit SIMD where it is enabled, SSE on x86-64 (part of its baseline), a
//! plain array elsewhere (which LLVM turns into NEON or scalar code). The kernels are written once
//! against this type; each operation rounds the same way on every target (a multiply then an add).

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use core::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub struct F32x4(v128);

    impl F32x4 {
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            Self(f32x4_splat(x))
        }

        /// # Safety
        /// `p..p + 4` must be readable.
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> Self {
            Self(unsafe { v128_load(p.cast()) })
        }

        /// `*p` in every lane.
        ///
        /// # Safety
        /// `p` must be readable.
        #[inline(always)]
        pub unsafe fn load_splat(p: *const f32) -> Self {
            Self(unsafe { v128_load32_splat(p.cast()) })
        }

        /// # Safety
        /// `p..p + 4` must be writable.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            unsafe { v128_store(p.cast(), self.0) }
        }

        /// `self + a * b` (a multiply then an add: wasm's plain SIMD has no fused multiply-add).
        #[inline(always)]
        pub fn mul_add(self, a: Self, b: Self) -> Self {
            Self(f32x4_add(self.0, f32x4_mul(a.0, b.0)))
        }

        #[inline(always)]
        pub fn add(self, other: Self) -> Self {
            Self(f32x4_add(self.0, other.0))
        }

        /// `self` in the lanes where `lo < x < hi`, 0 elsewhere (and where `x` is NaN).
        #[inline(always)]
        pub fn where_inside(self, x: Self, lo: Self, hi: Self) -> Self {
            Self(v128_and(self.0, v128_and(f32x4_gt(x.0, lo.0), f32x4_lt(x.0, hi.0))))
        }

        /// Each lane clamped to `lo..=hi` (`pmax`/`pmin`: one instruction each on x86).
        #[inline(always)]
        pub fn clamp(self, lo: Self, hi: Self) -> Self {
            Self(f32x4_pmin(hi.0, f32x4_pmax(lo.0, self.0)))
        }

        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            [
                f32x4_extract_lane::<0>(self.0),
                f32x4_extract_lane::<1>(self.0),
                f32x4_extract_lane::<2>(self.0),
                f32x4_extract_lane::<3>(self.0),
            ]
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct F32x4(__m128);

    // SAFETY (every intrinsic below): SSE and SSE2 are part of x86-64's baseline.
    impl F32x4 {
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            Self(unsafe { _mm_set1_ps(x) })
        }

        /// # Safety
        /// `p..p + 4` must be readable.
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> Self {
            Self(unsafe { _mm_loadu_ps(p) })
        }

        /// `*p` in every lane.
        ///
        /// # Safety
        /// `p` must be readable.
        #[inline(always)]
        pub unsafe fn load_splat(p: *const f32) -> Self {
            Self(unsafe { _mm_load1_ps(p) })
        }

        /// # Safety
        /// `p..p + 4` must be writable.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            unsafe { _mm_storeu_ps(p, self.0) }
        }

        /// `self + a * b`, rounded twice as on wasm.
        #[inline(always)]
        pub fn mul_add(self, a: Self, b: Self) -> Self {
            Self(unsafe { _mm_add_ps(self.0, _mm_mul_ps(a.0, b.0)) })
        }

        #[inline(always)]
        pub fn add(self, other: Self) -> Self {
            Self(unsafe { _mm_add_ps(self.0, other.0) })
        }

        /// `self` in the lanes where `lo < x < hi`, 0 elsewhere (and where `x` is NaN).
        #[inline(always)]
        pub fn where_inside(self, x: Self, lo: Self, hi: Self) -> Self {
            Self(unsafe { _mm_and_ps(self.0, _mm_and_ps(_mm_cmpgt_ps(x.0, lo.0), _mm_cmplt_ps(x.0, hi.0))) })
        }

        /// Each lane clamped to `lo..=hi` (a NaN lane becomes `lo`, as wasm's `pmax`/`pmin` do).
        #[inline(always)]
        pub fn clamp(self, lo: Self, hi: Self) -> Self {
            Self(unsafe { _mm_min_ps(_mm_max_ps(self.0, lo.0), hi.0) })
        }

        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            let mut out = [0.0; 4];
            unsafe { _mm_storeu_ps(out.as_mut_ptr(), self.0) };
            out
        }
    }
}

#[cfg(not(any(all(target_arch = "wasm32", target_feature = "simd128"), target_arch = "x86_64")))]
mod imp {
    #[derive(Clone, Copy)]
    pub struct F32x4([f32; 4]);

    impl F32x4 {
        #[inline(always)]
        pub fn splat(x: f32) -> Self {
            Self([x; 4])
        }

        /// # Safety
        /// `p..p + 4` must be readable.
        #[inline(always)]
        pub unsafe fn load(p: *const f32) -> Self {
            Self(unsafe { p.cast::<[f32; 4]>().read_unaligned() })
        }

        /// `*p` in every lane.
        ///
        /// # Safety
        /// `p` must be readable.
        #[inline(always)]
        pub unsafe fn load_splat(p: *const f32) -> Self {
            Self([unsafe { *p }; 4])
        }

        /// # Safety
        /// `p..p + 4` must be writable.
        #[inline(always)]
        pub unsafe fn store(self, p: *mut f32) {
            unsafe { p.cast::<[f32; 4]>().write_unaligned(self.0) }
        }

        /// `self + a * b`, rounded twice as on wasm.
        #[inline(always)]
        pub fn mul_add(self, a: Self, b: Self) -> Self {
            Self(core::array::from_fn(|i| self.0[i] + a.0[i] * b.0[i]))
        }

        #[inline(always)]
        pub fn add(self, other: Self) -> Self {
            Self(core::array::from_fn(|i| self.0[i] + other.0[i]))
        }

        /// `self` in the lanes where `lo < x < hi`, 0 elsewhere (and where `x` is NaN).
        #[inline(always)]
        pub fn where_inside(self, x: Self, lo: Self, hi: Self) -> Self {
            Self(core::array::from_fn(|i| {
                if lo.0[i] < x.0[i] && x.0[i] < hi.0[i] {
                    self.0[i]
                } else {
                    0.0
                }
            }))
        }

        /// Each lane clamped to `lo..=hi`.
        #[inline(always)]
        pub fn clamp(self, lo: Self, hi: Self) -> Self {
            Self(core::array::from_fn(|i| {
                let x = if self.0[i] < lo.0[i] { lo.0[i] } else { self.0[i] };
                if hi.0[i] < x { hi.0[i] } else { x }
            }))
        }

        #[inline(always)]
        pub fn to_array(self) -> [f32; 4] {
            self.0
        }
    }
}

pub use imp::F32x4;
