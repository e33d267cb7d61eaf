/**
 * Seeded randomness that every peer reproduces exactly: an sfc32 generator, a Fisher-Yates
 * shuffle, and gamma and Dirichlet samplers. Integer results depend only on the seed. Float
 * results also depend on Math.log, Math.exp and Math.cos, which ECMAScript lets engines
 * approximate.
 * NOTE: peers agree on Dirichlet shards only if they compute those functions identically, so
 * run every peer on the same Node version.
 */

const UINT32_RANGE = 2 ** 32

/** Mixes a 32-bit word with the murmur3 finalizer, a bijection that spreads every input bit. */
function mix32(word: number): number {
  let h = word | 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

function hashWords(words: readonly number[]): number {
  let h = 0x3c6ef372
  for (const word of words) {
    h = mix32(((h ^ word) + 0x9e3779b9) | 0)
  }
  return h
}

/**
 * Derives a 32-bit seed for one use of randomness from the run's `seed`, a `tag` naming the use
 * and an `index` (e.g. the class number), so different uses never share a stream. `seed` must be
 * a safe integer and `index` an integer in 0..2^32-1.
 */
export function deriveSeed(seed: number, tag: string, index = 0): number {
  if (!Number.isSafeInteger(seed)) {
    throw new RangeError(`Invalid seed ${seed}: expected a safe integer.`)
  }
  if (!Number.isInteger(index) || index < 0 || index >= UINT32_RANGE) {
    throw new RangeError(`Invalid stream index ${index}: expected an integer in 0..2^32-1.`)
  }

  // The low and high 32-bit halves of the seed, so seeds that differ above bit 31 also differ.
  const seedLow = seed >>> 0
  const seedHigh = Math.floor(seed / UINT32_RANGE) >>> 0
  const words = [seedLow, seedHigh, tag.length]
  for (let i = 0; i < tag.length; i++) {
    words.push(tag.charCodeAt(i))
  }
  words.push(index)
  return hashWords(words)
}

/** A seeded sfc32 generator (Small Fast Counting, 32-bit variant) with uniform and normal draws. */
export class Random {
  private a: number
  private b: number
  private c: number
  private counter: number

  /** Creates a generator from a 32-bit seed, such as one that `deriveSeed` returns. */
  constructor(seed: number) {
    // Expands the seed into three state words with a splitmix-style Weyl sequence.
    let weyl = seed | 0
    const nextWord = () => {
      weyl = (weyl + 0x9e3779b9) | 0
      return mix32(weyl)
    }
    this.a = nextWord()
    this.b = nextWord()
    this.c = nextWord()
    this.counter = 1
    // The first outputs after seeding are correlated with the seed, so discard them.
    for (let i = 0; i < 12; i++) {
      this.nextUint32()
    }
  }

  /** Returns a uniform integer in 0..2^32-1. */
  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.counter) | 0
    this.counter = (this.counter + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }

  /** Returns a uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const high = this.nextUint32() >>> 5
    const low = this.nextUint32() >>> 6
    return (high * 2 ** 26 + low) / 2 ** 53
  }

  /** Returns a uniform integer in 0..bound-1, without modulo bias. `bound` is in 1..2^32. */
  nextInt(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > UINT32_RANGE) {
      throw new RangeError(`Invalid bound ${bound}: expected an integer in 1..2^32.`)
    }
    // Rejects draws from the incomplete last block of `bound` values.
    const limit = UINT32_RANGE - (UINT32_RANGE % bound)
    let draw = this.nextUint32()
    while (draw >= limit) {
      draw = this.nextUint32()
    }
    return draw % bound
  }

  /** Returns a standard normal sample (Box-Muller transform). */
  nextNormal(): number {
    // 1 - nextFloat() lies in (0, 1], so the logarithm is finite.
    const radius = Math.sqrt(-2 * Math.log(1 - this.nextFloat()))
    return radius * Math.cos(2 * Math.PI * this.nextFloat())
  }
}

/** Shuffles `array` in place with the Fisher-Yates algorithm, so every order is equally likely. */
export function shuffleInPlace(array: Uint32Array, random: Random): void {
  for (let i = array.length - 1; i > 0; i--) {
    const j = random.nextInt(i + 1)
    const value = array[i] as number
    array[i] = array[j] as number
    array[j] = value
  }
}

function requireShape(alpha: number): void {
  if (!Number.isFinite(alpha) || alpha <= 0) {
    throw new RangeError(`Invalid gamma shape ${alpha}: expected a finite number > 0.`)
  }
}

/**
 * Returns the natural logarithm of a Gamma(alpha, 1) sample. Working in logs keeps tiny samples
 * for alpha well below 1 from underflowing to 0.
 */
export function sampleLogGamma(random: Random, alpha: number): number {
  requireShape(alpha)
  if (alpha < 1) {
    // Boost: if X ~ Gamma(alpha + 1) and U ~ Uniform(0, 1), then X * U^(1/alpha) ~ Gamma(alpha).
    const uniform = 1 - random.nextFloat()
    return sampleLogGamma(random, alpha + 1) + Math.log(uniform) / alpha
  }

  // The Marsaglia-Tsang squeeze-and-reject method for alpha >= 1.
  const d = alpha - 1 / 3
  const c = 1 / Math.sqrt(9 * d)
  for (;;) {
    const x = random.nextNormal()
    const t = 1 + c * x
    if (t <= 0) {
      continue
    }
    const v = t * t * t
    const u = random.nextFloat()
    const xSquared = x * x
    // The cheap squeeze test accepts most samples without computing logarithms.
    if (u < 1 - 0.0331 * xSquared * xSquared) {
      return Math.log(d * v)
    }
    if (Math.log(u) < 0.5 * xSquared + d * (1 - v + Math.log(v))) {
      return Math.log(d * v)
    }
  }
}

/** Returns a Gamma(alpha, 1) sample. It may underflow to 0 for alpha far below 1. */
export function sampleGamma(random: Random, alpha: number): number {
  return Math.exp(sampleLogGamma(random, alpha))
}

/**
 * Returns a sample from the symmetric Dirichlet distribution Dir(alpha, ..., alpha) over
 * `dimensions` categories: non-negative proportions that sum to 1 up to rounding.
 */
export function sampleDirichlet(random: Random, alpha: number, dimensions: number): Float64Array {
  requireShape(alpha)
  if (!Number.isInteger(dimensions) || dimensions < 1) {
    throw new RangeError(
      `Invalid Dirichlet dimension count ${dimensions}: expected an integer >= 1.`,
    )
  }

  // Normalising gamma samples gives a Dirichlet sample. Subtracting the largest logarithm before
  // exponentiating keeps the largest term at 1, so the sum never underflows to 0.
  const logs = new Float64Array(dimensions)
  let maxLog = Number.NEGATIVE_INFINITY
  for (let i = 0; i < dimensions; i++) {
    const log = sampleLogGamma(random, alpha)
    logs[i] = log
    maxLog = Math.max(maxLog, log)
  }

  const proportions = new Float64Array(dimensions)
  let total = 0
  for (let i = 0; i < dimensions; i++) {
    const weight = Math.exp((logs[i] as number) - maxLog)
    proportions[i] = weight
    total += weight
  }
  for (let i = 0; i < dimensions; i++) {
    proportions[i] = (proportions[i] as number) / total
  }
  return proportions
}
