/**
 * Instrument test codes → LOINC, and per-code plausibility ranges. The built-in table covers the
 * common analyzer mnemonics seen in the corpus (Sysmex, Horiba, Roche, Siemens, Abbott, Arkray); a port's
 * configuration adds or overrides entries. Codes not in the map are still filed, coded in the
 * instrument's own code system, so nothing is dropped for want of a mapping.
 */
export interface CodeMapping {
  loinc: string;
  display?: string;
  /** UCUM unit to report when the instrument sends none or a non-UCUM one. */
  ucum?: string;
}

export type CodeMap = Record<string, CodeMapping>;

export const LOINC = 'http://loinc.org';
export const UCUM = 'http://unitsofmeasure.org';

export const DEFAULT_CODE_MAP: CodeMap = {
  WBC: { loinc: '6690-2', display: 'Leukocytes [#/volume] in Blood by Automated count' },
  RBC: { loinc: '789-8', display: 'Erythrocytes [#/volume] in Blood by Automated count' },
  HGB: { loinc: '718-7', display: 'Hemoglobin [Mass/volume] in Blood' },
  HCT: { loinc: '4544-3', display: 'Hematocrit [Volume Fraction] of Blood by Automated count' },
  MCV: { loinc: '787-2', display: 'MCV [Entitic volume] by Automated count' },
  MCH: { loinc: '785-6', display: 'MCH [Entitic mass] by Automated count' },
  MCHC: { loinc: '786-4', display: 'MCHC [Mass/volume] by Automated count' },
  PLT: { loinc: '777-3', display: 'Platelets [#/volume] in Blood by Automated count' },
  'RDW-CV': { loinc: '788-0', display: 'Erythrocyte distribution width [Ratio] by Automated count' },
  'RDW-SD': { loinc: '21000-5', display: 'Erythrocyte distribution width [Entitic volume] by Automated count' },
  MPV: { loinc: '32623-1', display: 'Platelet mean volume [Entitic volume] in Blood by Automated count' },
  'NEUT#': { loinc: '751-8', display: 'Neutrophils [#/volume] in Blood by Automated count' },
  'NEUT%': { loinc: '770-8', display: 'Neutrophils/100 leukocytes in Blood by Automated count' },
  'LYMPH#': { loinc: '731-0', display: 'Lymphocytes [#/volume] in Blood by Automated count' },
  'LYMPH%': { loinc: '736-9', display: 'Lymphocytes/100 leukocytes in Blood by Automated count' },
  'LYM#': { loinc: '731-0', display: 'Lymphocytes [#/volume] in Blood by Automated count' },
  'LYM%': { loinc: '736-9', display: 'Lymphocytes/100 leukocytes in Blood by Automated count' },
  'MONO#': { loinc: '742-7', display: 'Monocytes [#/volume] in Blood by Automated count' },
  'MONO%': { loinc: '5905-5', display: 'Monocytes/100 leukocytes in Blood by Automated count' },
  'EO#': { loinc: '711-2', display: 'Eosinophils [#/volume] in Blood by Automated count' },
  'EO%': { loinc: '713-8', display: 'Eosinophils/100 leukocytes in Blood by Automated count' },
  'BASO#': { loinc: '704-7', display: 'Basophils [#/volume] in Blood by Automated count' },
  'BASO%': { loinc: '706-2', display: 'Basophils/100 leukocytes in Blood by Automated count' },
  HbA1c: { loinc: '4548-4', display: 'Hemoglobin A1c/Hemoglobin.total in Blood', ucum: '%' },
  Alb: { loinc: '14957-5', display: 'Microalbumin [Mass/volume] in Urine', ucum: 'mg/L' },
  Na: { loinc: '2951-2', display: 'Sodium [Moles/volume] in Serum or Plasma', ucum: 'mmol/L' },
  K: { loinc: '2823-3', display: 'Potassium [Moles/volume] in Serum or Plasma', ucum: 'mmol/L' },
  Cl: { loinc: '2075-0', display: 'Chloride [Moles/volume] in Serum or Plasma', ucum: 'mmol/L' },
  // Bedside vital signs (line-format devices).
  HR: { loinc: '8867-4', display: 'Heart rate', ucum: '/min' },
  PULSE: { loinc: '8867-4', display: 'Heart rate', ucum: '/min' },
  SPO2: { loinc: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry', ucum: '%' },
  SpO2: { loinc: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry', ucum: '%' },
  RR: { loinc: '9279-1', display: 'Respiratory rate', ucum: '/min' },
  TEMP: { loinc: '8310-5', display: 'Body temperature', ucum: 'Cel' },
  NIBP_SYS: { loinc: '8480-6', display: 'Systolic blood pressure', ucum: 'mm[Hg]' },
  NIBP_DIA: { loinc: '8462-4', display: 'Diastolic blood pressure', ucum: 'mm[Hg]' },
};

export interface PlausibleRange {
  low: number;
  high: number;
  /** Unit the range is expressed in (UCUM); a value in another unit is not range-checked. */
  unit?: string;
}

/** Physiologically possible values by LOINC code; outside → held for an operator, never filed. */
export const DEFAULT_PLAUSIBILITY: Record<string, PlausibleRange> = {
  '59408-5': { low: 0, high: 100, unit: '%' },
  '2708-6': { low: 0, high: 100, unit: '%' },
  '8867-4': { low: 0, high: 350, unit: '/min' },
  '8310-5': { low: 25, high: 45, unit: 'Cel' },
  '9279-1': { low: 0, high: 150, unit: '/min' },
  '8480-6': { low: 0, high: 350, unit: 'mm[Hg]' },
  '8462-4': { low: 0, high: 300, unit: 'mm[Hg]' },
  '4548-4': { low: 0, high: 100, unit: '%' },
  '2951-2': { low: 80, high: 220, unit: 'mmol/L' },
  '2823-3': { low: 0.5, high: 15, unit: 'mmol/L' },
};

/**
 * Looks a test up: the whole test id first (e.g. `MTB-RIF^^Xpert^^^rpoB1^Ct`), then the local code,
 * then the local code before a '/' (Roche sends `685/` = test 685, no dilution).
 */
export function lookupCode(map: CodeMap, testId: string, localCode: string): CodeMapping | undefined {
  return map[testId] ?? map[localCode] ?? map[localCode.split('/')[0]] ?? map[localCode.toUpperCase()];
}

/** A LOINC code written by the instrument itself (Horiba sends `^^^WBC^804-5^1`), check digit verified. */
export function embeddedLoinc(components: string[]): string | undefined {
  for (const c of components) {
    const m = /^(\d{1,7})-(\d)$/.exec(c);
    if (m && loincCheckDigit(m[1]) === Number(m[2])) return c;
  }
  return undefined;
}

/** LOINC mod-10 check digit (Luhn variant used by Regenstrief). */
export function loincCheckDigit(digits: string): number {
  let sum = 0;
  const rev = digits.split('').reverse();
  for (let i = 0; i < rev.length; i++) {
    let d = Number(rev[i]);
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return (10 - (sum % 10)) % 10;
}

/** Instrument unit → UCUM where the spelling differs only in case or a known alias. */
export function toUcum(unit: string): string | undefined {
  const u = unit.trim();
  if (!u) return undefined;
  const aliases: Record<string, string> = {
    'U/l': 'U/L', 'mmol/l': 'mmol/L', 'umol/l': 'umol/L', 'µmol/l': 'umol/L', 'µmol/L': 'umol/L', 'mg/l': 'mg/L', 'g/l': 'g/L',
    'mg/dl': 'mg/dL', 'g/dl': 'g/dL', 'bpm': '/min', '/min': '/min', 'mmHg': 'mm[Hg]', 'C': 'Cel', '°C': 'Cel', 'degC': 'Cel',
  };
  if (aliases[u]) return aliases[u];
  // Already UCUM-looking (10*3/uL, fL, %, g/dL, mg/g): keep.
  if (/^[A-Za-z0-9*/%.\[\]{}^-]+$/.test(u)) return u;
  return undefined;
}
