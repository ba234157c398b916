#!/usr/bin/env python
"""Generate the committed demo corpus in data/demo/ (byte-identical for a given seed).

The corpus is synthetic finance Q&A, half Chinese and half English, in the three
formats danlu reads (alpaca jsonl, sharegpt json, messages parquet), plus a plain
text corpus that trains the demo model's tokenizer. Into the records it plants the
problems the pipeline must handle -- exact and near duplicates, PII and look-alike
decoys, malformed records, text noise -- and writes where each one went to
planted.json, so tests can check that exactly those are found.

Nothing is copied from C-Eval or CMMLU (non-commercial licence): the exam-style
lines of the tokenizer corpus are built from this file's own templates.

Run from the repository root:
    python scripts/make_demo_data.py            # same as --seed 42 --out data/demo
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# ---------------------------------------------------------------------------
# Vocabulary. An answer is several sentences drawn from these pools, filled with
# fresh numbers and names and put in random order, so two unplanted records share
# few 5-grams and MinHash at Jaccard 0.8 only pairs up what was planted.
#
# Slots: {term} {term2} {topic} {co} {person} {city} stay fixed within a record;
# every other slot is drawn anew at each use (see NUMBER_SLOTS and _money).
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    name: str  # as it reads inside a sentence
    terms: tuple[str, ...]  # concepts a question can be about
    facts: tuple[str, ...]  # answer sentences only this topic uses


TOPIC_KEYS = (
    "stocks", "bonds", "funds", "interest_rates", "loans", "mortgages", "credit_cards",
    "insurance", "tax", "accounting", "risk_management", "compliance_aml", "budgeting",
    "pensions", "foreign_exchange",
)

TOPICS_ZH = (
    Topic(
        "股票投资",
        ("市盈率", "市净率", "股息率", "流通市值", "换手率", "融资融券", "限售股解禁", "股票回购"),
        (
            "{co}最新的市盈率约为{multiple}倍，比行业平均水平高出{pct}。",
            "按{pct}的股息率计算，持有{amt}市值的股票每年可获得约{amt2}现金分红。",
            "A股实行T+1交易制度，当日买入的股票要到下一个交易日才能卖出。",
            "主板股票的日涨跌幅限制一般为10%，创业板和科创板为20%。",
            "{co}计划在未来{n}个月内回购不超过{amt}的股份，用于员工持股计划。",
            "换手率过高往往意味着筹码松动，短线投机资金占比较大。",
            "开通融资融券一般要求证券账户资产不低于50万元且开户满半年。",
            "限售股解禁前后，个股股价的波动通常会明显加大。",
        ),
    ),
    Topic(
        "债券",
        ("到期收益率", "久期", "票面利率", "信用利差", "国债", "可转债", "城投债", "信用评级"),
        (
            "债券价格与市场利率反向变动，利率上升{bp}个基点时，"
            "久期为{years}年的债券价格约下跌{pct}。",
            "{co}发行的{years}年期公司债票面利率为{rate}，每年付息一次。",
            "信用评级从AA+下调至AA，往往会导致信用利差扩大{bp}个基点左右。",
            "国债利息收入免征个人所得税，这是它相对公司债的一项优势。",
            "可转债兼具债性和股性，转股价值高于债底时走势更接近股票。",
            "持有至到期的投资者不必过分在意中途的价格波动，但要关注发行人的违约风险。",
            "当前{years}年期国债收益率约为{rate}，较年初下行了{bp}个基点。",
            "久期越长，债券价格对利率变化越敏感。",
        ),
    ),
    Topic(
        "基金",
        ("指数基金", "货币基金", "管理费率", "基金净值", "基金定投", "最大回撤", "ETF", "债券基金"),
        (
            "指数基金的管理费率通常在0.15%到0.5%之间，明显低于主动管理型基金。",
            "{person}每月定投{amt}，坚持{years}年后按年化{pct}估算，账户市值可超过{amt2}。",
            "货币基金流动性好，七日年化收益率近期在{rate}左右。",
            "这只基金过去{n}年的最大回撤为{pct}，买入前要评估自己能否承受。",
            "基金净值在每个交易日收盘后公布，申购按当日净值确认份额。",
            "选基金时应关注基金经理的任职年限、规模变化和风格是否稳定。",
            "ETF在交易所上市，可以像股票一样在盘中买卖，交易成本较低。",
            "{co}旗下的债券基金今年以来收益率为{pct}，跑赢同类平均水平。",
        ),
    ),
    Topic(
        "利率",
        (
            "贷款市场报价利率", "存款准备金率", "政策利率", "实际利率", "通货膨胀", "复利", "降息",
            "逆回购",
        ),
        (
            "当前一年期LPR为{rate}，五年期以上LPR为{rate2}。",
            "实际利率等于名义利率减去通货膨胀率，若存款利率为{rate}而CPI上涨{pct}，"
            "实际收益几乎为零。",
            "央行下调存款准备金率{cut}个百分点，预计释放长期资金约{amt}。",
            "按复利计算，{amt}本金以年利率{rate}存{years}年，到期本息合计约{amt2}。",
            "降息通常会压低债券收益率，并提振股票估值。",
            "收益率曲线倒挂常被视为经济衰退的先行信号。",
            "央行开展了{amt}的7天期逆回购操作，中标利率维持在{rate}。",
            "浮动利率贷款在降息周期中对借款人更有利。",
        ),
    ),
    Topic(
        "贷款",
        (
            "等额本息", "等额本金", "年化利率", "征信报告", "抵押贷款", "信用贷款", "提前还款",
            "逾期",
        ),
        (
            "{person}申请了{amt}的信用贷款，期限{n}个月，年化利率{pct}。",
            "等额本息每月还款额固定，前期还款中利息占比较高；等额本金每月本金固定，总利息更少。",
            "逾期记录会在征信报告中保留五年，影响之后的贷款审批。",
            "部分银行对提前还款收取剩余本金{pct}的违约金，签约前应仔细阅读合同条款。",
            "判断贷款的真实成本要看年化利率，而不是宣传中的日息或月息。",
            "月供一般不宜超过家庭月收入的{pct}。",
            "{co}获得了银行{amt}的流动资金贷款，用于补充营运资金。",
            "抵押贷款利率通常低于信用贷款，但需要提供房产等抵押物。",
        ),
    ),
    Topic(
        "房贷",
        (
            "首付比例", "公积金贷款", "商业贷款", "组合贷款", "月供", "房贷利率", "转按揭",
            "提前还贷",
        ),
        (
            "首套房首付比例最低为{pct}，二套房一般要求更高。",
            "贷款{amt}、期限{years}年、利率{rate}，按等额本息计算月供约{amt2}。",
            "公积金贷款利率低于商业贷款，但额度受缴存基数和缴存年限限制。",
            "{person}在{city}买了一套{big_n}平方米的住房，总价{amt}。",
            "提前还贷前应比较理财收益和房贷利率，理财收益低于房贷利率时提前还款更划算。",
            "组合贷款中公积金部分和商业贷款部分分别计息。",
            "存量房贷利率调整后，{person}每月的月供减少了约{yuan}元。",
            "办理转按揭需要原贷款银行和新贷款银行共同配合。",
        ),
    ),
    Topic(
        "信用卡",
        (
            "免息还款期", "最低还款额", "分期手续费", "信用额度", "账单日", "还款日", "信用卡取现",
            "年费",
        ),
        (
            "信用卡免息还款期最长可达56天，取决于消费日距离账单日的远近。",
            "只还最低还款额会使全部欠款按日息万分之五计息，折合年化接近18%。",
            "{yuan}元分{n}期，每期手续费率{rate}，折算成实际年化利率约为{pct}。",
            "信用额度使用率长期超过{pct}，可能被银行视为风险信号。",
            "信用卡取现一般没有免息期，从取现当日起计息。",
            "{person}的信用卡账单日是每月{day}日，还款日在账单日后第20天。",
            "部分银行首年免年费，一年内刷卡满{n}次可免次年年费。",
            "按时全额还款是积累良好信用记录最简单的方法。",
        ),
    ),
    Topic(
        "保险",
        ("重疾险", "医疗险", "定期寿险", "意外险", "年金险", "免赔额", "等待期", "现金价值"),
        (
            "{age}岁男性投保{amt}保额、保障{years}年的定期寿险，年缴保费约{yuan}元。",
            "百万医疗险一般有1万元免赔额，适合作为社保的补充。",
            "重疾险的等待期通常为90天或180天，等待期内确诊不予赔付。",
            "年金险的现金价值在前几年较低，中途退保会有较大损失。",
            "家庭保障的顺序一般是先大人后孩子，先保障后理财。",
            "{co}推出的意外险产品保额为{amt}，年保费{yuan}元。",
            "投保时必须如实告知健康状况，否则可能影响理赔。",
            "保额最好能覆盖家庭{n}年的支出和尚未还清的负债。",
        ),
    ),
    Topic(
        "税务",
        (
            "个人所得税", "专项附加扣除", "增值税", "企业所得税", "汇算清缴", "印花税", "预扣预缴",
            "免税额",
        ),
        (
            "个人所得税综合所得的基本减除费用为每年6万元。",
            "子女教育专项附加扣除标准为每个子女每月2000元。",
            "{person}年收入{amt}，扣除五险一金和专项附加扣除后，适用税率为{pct}。",
            "年度汇算清缴在次年3月1日至6月30日之间办理。",
            "小规模纳税人增值税征收率为{rate}，可以按季度申报。",
            "{co}去年缴纳企业所得税{amt}，实际税负率为{pct}。",
            "股票转让暂免征收个人所得税，但卖出时需要缴纳印花税。",
            "发票和凭证要妥善保存，以备税务机关核查。",
        ),
    ),
    Topic(
        "会计",
        (
            "资产负债表", "利润表", "现金流量表", "应收账款", "折旧", "权责发生制", "毛利率",
            "存货周转率",
        ),
        (
            "{co}本年度营业收入{amt}，毛利率{pct}，同比提升{n}个百分点。",
            "资产等于负债加所有者权益，这是资产负债表的基本恒等式。",
            "在权责发生制下，收入在实现时确认，而不是在收到现金时确认。",
            "应收账款周转天数从{big_n}天增加到{big_n2}天，说明回款速度放缓。",
            "固定资产按直线法在{years}年内计提折旧，残值率为{pct}。",
            "经营活动现金流持续低于净利润，需要警惕利润质量。",
            "计提存货跌价准备时，需要结合可变现净值进行减值测试。",
            "审计师对{co}的财务报表出具了标准无保留意见。",
        ),
    ),
    Topic(
        "风险管理",
        (
            "风险价值", "压力测试", "分散投资", "套期保值", "夏普比率", "流动性风险", "信用风险",
            "止损",
        ),
        (
            "该组合在95%置信水平下的单日风险价值为{amt}。",
            "压力测试假设股市下跌{pct}、利率上升{bp}个基点，组合损失约{amt}。",
            "分散投资可以降低非系统性风险，但无法消除系统性风险。",
            "{co}用外汇远期合约对冲了约{pct}的美元敞口。",
            "夏普比率衡量每承担一单位波动所获得的超额收益，数值越高越好。",
            "流动性风险在市场恐慌时最容易暴露，应保留足够的现金缓冲。",
            "单一行业的持仓不宜超过组合的{pct}。",
            "设置止损线可以限制单笔亏损，但过于频繁的止损也会侵蚀收益。",
        ),
    ),
    Topic(
        "合规与反洗钱",
        (
            "反洗钱", "客户尽职调查", "大额交易报告", "可疑交易", "受益所有人", "了解你的客户",
            "制裁名单筛查", "内幕交易",
        ),
        (
            "当日累计人民币现金交易5万元以上，金融机构需要提交大额交易报告。",
            "客户尽职调查要求识别并核实客户身份，以及背后的受益所有人。",
            "把大额资金拆成多笔小额交易以规避报告，是典型的可疑交易特征。",
            "{co}因未按规定履行反洗钱义务，被处以{amt}罚款。",
            "金融机构应至少保存客户身份资料和交易记录{n}年。",
            "利用未公开信息买卖证券构成内幕交易，将被依法追究责任。",
            "新开户客户需要经过制裁名单筛查，命中时应暂停业务并上报。",
            "合规培训每年至少开展{n}次，并留存培训记录。",
        ),
    ),
    Topic(
        "个人理财",
        (
            "应急资金", "记账", "50/30/20法则", "储蓄率", "消费贷", "资产配置", "理财目标",
            "家庭现金流",
        ),
        (
            "应急资金一般建议覆盖3到6个月的生活支出。",
            "{person}每月税后收入{yuan}元，房租就占了{pct}，储蓄率偏低。",
            "50/30/20法则建议把收入的50%用于必要开支，30%用于可选消费，20%用于储蓄。",
            "坚持记账{n}个月，往往能发现不少可以削减的隐性支出。",
            "先储蓄再消费：发工资当天自动转出{pct}到储蓄账户。",
            "提前为大额支出做好规划，比临时动用消费贷的成本低得多。",
            "理财目标应当具体、可衡量，并设定明确的期限。",
            "家庭净资产等于总资产减去总负债，建议每年盘点一次。",
        ),
    ),
    Topic(
        "养老金",
        (
            "基本养老保险", "个人养老金账户", "企业年金", "缴费年限", "养老金替代率", "延迟退休",
            "个人账户", "领取条件",
        ),
        (
            "个人养老金账户每年缴费上限为12000元，缴费可以在税前扣除。",
            "基本养老保险累计缴费满15年，达到退休年龄后才能按月领取养老金。",
            "{person}今年{age}岁，已缴纳养老保险{years}年，预计替代率约为{pct}。",
            "企业年金由单位和职工共同缴费，单位缴费部分的归属可能设有等待期。",
            "越早开始为养老储蓄，复利的效果越明显。",
            "{co}为员工提供企业年金，单位缴费比例为工资的{pct}。",
            "退休后的资产配置应逐步降低股票比例，以控制波动。",
            "养老保险个人账户的余额在参保人去世后可以依法继承。",
        ),
    ),
    Topic(
        "外汇",
        (
            "汇率", "人民币中间价", "即期汇率", "远期结售汇", "外汇管理", "购汇额度", "汇兑损益",
            "离岸人民币",
        ),
        (
            "个人每年的购汇便利化额度为等值5万美元。",
            "今日人民币对美元中间价报{fx}，较上一交易日调整了{pips}个基点。",
            "{co}有约{amt}的美元应付账款，计划通过远期结售汇锁定汇率。",
            "汇率波动会带来汇兑损益，出口企业应建立汇率风险管理制度。",
            "离岸人民币汇率受国际资金流动影响，与在岸汇率之间常有价差。",
            "{person}计划出国留学，打算分批购汇以降低汇率波动的影响。",
            "利差扩大往往会推动资本流向高利率货币。",
            "购买力平价理论认为，长期汇率由两国的物价水平决定。",
        ),
    ),
)

TOPICS_EN = (
    Topic(
        "stocks",
        (
            "the price-to-earnings ratio", "the price-to-book ratio", "dividend yield",
            "free-float market cap", "share turnover", "margin trading", "lock-up expiry",
            "share buybacks",
        ),
        (
            "{co} currently trades at about {multiple} times earnings, roughly {pct} above its "
            "sector average.",
            "At a dividend yield of {pct}, a {amt} position would pay out around {amt2} a year "
            "before tax.",
            "A buyback reduces the share count, which mechanically lifts earnings per share.",
            "{co} announced a buyback of up to {amt} over the next {n} months.",
            "High turnover often signals that short-term traders dominate the order book.",
            "Margin trading magnifies both gains and losses, and a margin call can force a sale "
            "at the worst moment.",
            "Lock-up expiries tend to add selling pressure as early investors become free to sell.",
            "Holding shares across at least {n} unrelated sectors reduces company-specific risk.",
        ),
    ),
    Topic(
        "bonds",
        (
            "yield to maturity", "duration", "the coupon rate", "credit spreads",
            "government bonds", "convertible bonds", "municipal bonds", "credit ratings",
        ),
        (
            "Bond prices move inversely to yields, so a {bp} basis-point rise would cut a bond "
            "with {years}-year duration by roughly {pct}.",
            "{co} issued {years}-year notes with a coupon of {rate}, paid semi-annually.",
            "A downgrade from A to BBB typically widens the credit spread by around {bp} basis "
            "points.",
            "Interest on US Treasuries is exempt from state income tax.",
            "A convertible bond behaves more like equity once its conversion value exceeds the "
            "bond floor.",
            "If you hold to maturity, interim price swings matter less than the issuer's ability "
            "to repay.",
            "The {years}-year government yield is now around {rate}, down {bp} basis points since "
            "January.",
            "The longer the duration, the more sensitive a bond is to interest-rate moves.",
        ),
    ),
    Topic(
        "funds",
        (
            "index funds", "money market funds", "the expense ratio", "net asset value",
            "dollar-cost averaging", "maximum drawdown", "exchange-traded funds", "bond funds",
        ),
        (
            "Index funds usually charge between 0.03% and 0.2% a year, far less than actively "
            "managed funds.",
            "Investing {amt} a month for {years} years at an assumed {pct} annual return could "
            "grow to more than {amt2}.",
            "Money market funds are highly liquid, with seven-day yields recently near {rate}.",
            "The fund's maximum drawdown over the past {n} years was {pct}, so ask whether you "
            "could sit through that.",
            "A mutual fund's net asset value is struck once a day after the market closes.",
            "When choosing a fund, look at the manager's tenure, asset growth and style "
            "consistency.",
            "Exchange-traded funds trade on an exchange throughout the day, just like shares.",
            "{co}'s bond fund has returned {pct} so far this year, ahead of its peer average.",
        ),
    ),
    Topic(
        "interest rates",
        (
            "the policy rate", "the reserve requirement", "real interest rates", "inflation",
            "compound interest", "rate cuts", "the federal funds rate", "the yield curve",
        ),
        (
            "The central bank held its policy rate at {rate}, in line with market expectations.",
            "The real interest rate is the nominal rate minus inflation, so a {rate} deposit with "
            "{pct} inflation barely keeps pace.",
            "Compounding {amt} at {rate} for {years} years would leave you with about {amt2}.",
            "Rate cuts usually push bond yields down and support equity valuations.",
            "An inverted yield curve has preceded most recessions of the past fifty years.",
            "Markets are pricing in {n} cuts of 25 basis points over the next year.",
            "Variable-rate borrowers benefit first when rates fall.",
            "Cutting the reserve requirement frees up bank liquidity without changing the "
            "headline rate.",
        ),
    ),
    Topic(
        "loans",
        (
            "amortising loans", "the annual percentage rate", "credit reports", "secured loans",
            "unsecured personal loans", "early repayment", "loan delinquency",
            "the debt-to-income ratio",
        ),
        (
            "{person} took out an unsecured loan of {amt} over {n} months at an APR of {pct}.",
            "With an amortising loan the monthly payment is fixed, but early payments are mostly "
            "interest.",
            "Late payments can stay on a credit report for up to seven years.",
            "Some lenders charge a prepayment penalty of {pct} of the outstanding balance.",
            "Compare loans on APR rather than on the headline monthly rate.",
            "Lenders generally prefer a debt-to-income ratio below {pct}.",
            "{co} secured a {amt} working-capital facility from its bank.",
            "Secured loans are cheaper because the lender can claim the collateral if you default.",
        ),
    ),
    Topic(
        "mortgages",
        (
            "the down payment", "fixed-rate mortgages", "adjustable-rate mortgages",
            "the monthly payment", "refinancing", "the loan-to-value ratio", "mortgage insurance",
            "closing costs",
        ),
        (
            "Many lenders ask for a down payment of at least {pct} of the purchase price.",
            "A {amt} mortgage over {years} years at {rate} works out to a monthly payment of "
            "about {amt2}.",
            "An adjustable-rate mortgage starts cheaper but can reset higher after the fixed "
            "period.",
            "{person} bought a {big_n}-square-metre flat in {city} for {amt}.",
            "Refinancing makes sense when the rate saving outweighs closing costs within a few "
            "years.",
            "A loan-to-value ratio above 80% usually requires mortgage insurance.",
            "Closing costs typically run between 2% and 5% of the loan amount.",
            "Overpaying a mortgage earns a guaranteed return equal to its interest rate.",
        ),
    ),
    Topic(
        "credit cards",
        (
            "the grace period", "the minimum payment", "instalment fees", "the credit limit",
            "the statement date", "cash advances", "annual fees", "balance transfers",
        ),
        (
            "The grace period can be as long as 56 days, depending on when in the cycle you spend.",
            "Paying only the minimum means interest accrues on the whole balance, often at over "
            "20% APR.",
            "Splitting a {amt} purchase into {n} instalments at {rate} per month costs roughly "
            "{pct} a year.",
            "Keeping utilisation below {pct} of your credit limit helps your score.",
            "Cash advances usually have no grace period and carry a separate fee.",
            "{person}'s statement closes on day {day} of each month, with payment due about three "
            "weeks later.",
            "A balance transfer at 0% for {n} months can help, provided you clear the debt before "
            "it ends.",
            "Paying in full every month is the simplest way to build a good credit history.",
        ),
    ),
    Topic(
        "insurance",
        (
            "term life insurance", "critical illness cover", "health insurance", "the deductible",
            "the premium", "the waiting period", "cash value", "annuities",
        ),
        (
            "A {age}-year-old non-smoker can buy {amt} of {years}-year term cover for a modest "
            "annual premium.",
            "Health plans with a higher deductible have lower premiums but more out-of-pocket "
            "risk.",
            "Critical illness policies usually have a waiting period of 90 days before cover "
            "starts.",
            "Whole-life policies build cash value slowly, so surrendering early often loses money.",
            "Insure the breadwinner first; the policy's job is to replace income, not to invest.",
            "{co} launched an accident policy with {amt} of cover for {yuan} dollars a year.",
            "Not disclosing a pre-existing condition is the most common reason claims are denied.",
            "A rough rule is cover of {n} times annual income plus any outstanding debts.",
        ),
    ),
    Topic(
        "tax",
        (
            "income tax", "tax deductions", "capital gains tax", "value-added tax", "tax brackets",
            "tax withholding", "the tax return", "tax credits",
        ),
        (
            "{person} earns {amt} a year, which puts the top slice of income in the {pct} bracket.",
            "Long-term capital gains are usually taxed at lower rates than ordinary income.",
            "A tax credit reduces the bill dollar for dollar, while a deduction only reduces "
            "taxable income.",
            "Employers withhold income tax from each paycheck based on the employee's declared "
            "allowances.",
            "{co} paid {amt} in corporate tax last year, an effective rate of {pct}.",
            "Contributions to a qualified retirement account can lower this year's taxable income.",
            "Keep receipts for at least {n} years in case the tax authority asks for them.",
            "Filing late without an extension can trigger penalties and interest.",
        ),
    ),
    Topic(
        "accounting",
        (
            "the balance sheet", "the income statement", "the cash flow statement",
            "accounts receivable", "depreciation", "accrual accounting", "gross margin",
            "inventory turnover",
        ),
        (
            "{co} reported revenue of {amt} with a gross margin of {pct}, up {n} points year on "
            "year.",
            "Assets equal liabilities plus equity, and every entry keeps that identity in balance.",
            "Under accrual accounting, revenue is recognised when earned, not when cash arrives.",
            "Days sales outstanding rose from {big_n} to {big_n2}, so customers are paying more "
            "slowly.",
            "Equipment is depreciated straight-line over {years} years with a residual value of "
            "{pct}.",
            "Operating cash flow that lags net income for years is a warning sign about earnings "
            "quality.",
            "Inventory is carried at the lower of cost and net realisable value.",
            "The auditors issued an unqualified opinion on {co}'s financial statements.",
        ),
    ),
    Topic(
        "risk management",
        (
            "value at risk", "stress testing", "diversification", "hedging", "the Sharpe ratio",
            "liquidity risk", "counterparty risk", "stop-loss orders",
        ),
        (
            "The portfolio's one-day 95% value at risk is {amt}.",
            "The stress test assumes equities fall {pct} and rates rise {bp} basis points, "
            "implying a loss of {amt}.",
            "Diversification removes company-specific risk but not market risk.",
            "{co} hedged about {pct} of its dollar exposure with forward contracts.",
            "The Sharpe ratio measures excess return per unit of volatility, and higher is better.",
            "Liquidity risk shows up when everyone wants to sell at once, so keep a cash buffer.",
            "No single sector should exceed {pct} of the portfolio.",
            "Stop-loss orders cap the damage on one position, but set them too tight and noise "
            "will trigger them.",
        ),
    ),
    Topic(
        "compliance and anti-money laundering",
        (
            "anti-money laundering rules", "customer due diligence", "suspicious activity reports",
            "beneficial ownership", "know-your-customer checks", "sanctions screening",
            "insider trading", "structuring",
        ),
        (
            "Banks must report cash transactions above $10,000 to the authorities.",
            "Customer due diligence means verifying identity and identifying the beneficial owner.",
            "Splitting deposits to stay under the reporting threshold is itself a red flag, known "
            "as structuring.",
            "{co} was fined {amt} for failing to monitor transactions adequately.",
            "Records of customer identity and transactions must be kept for at least {n} years.",
            "Trading on material non-public information is insider trading, whoever passed it on.",
            "Every new customer is screened against sanctions lists before the account opens.",
            "Staff should complete anti-money-laundering training at least once a year.",
        ),
    ),
    Topic(
        "personal budgeting",
        (
            "an emergency fund", "a monthly budget", "the 50/30/20 rule", "the savings rate",
            "net worth", "a sinking fund", "discretionary spending", "household cash flow",
        ),
        (
            "An emergency fund should cover three to six months of essential expenses.",
            "{person} takes home {amt} a month, and rent alone eats {pct} of it.",
            "The 50/30/20 rule splits take-home pay into needs, wants and savings.",
            "Tracking every expense for {n} months usually reveals subscriptions nobody uses.",
            "Pay yourself first by moving {pct} of each paycheck to savings on payday.",
            "A sinking fund for known big expenses beats reaching for a credit card.",
            "Goals work better when they are specific, measurable and dated.",
            "Net worth is assets minus liabilities, and it is worth checking once a year.",
        ),
    ),
    Topic(
        "pensions",
        (
            "defined benefit plans",
            "defined contribution plans",
            "the 401(k)",
            "the employer match",
            "retirement annuities",
            "the replacement rate",
            "required minimum distributions",
            "the state pension",
        ),
        (
            "A defined contribution plan's payout depends on how much goes in and how it grows.",
            "{co} matches employee contributions up to {pct} of salary.",
            "{person} is {age} and has saved {amt} for retirement, roughly {n} times annual "
            "salary.",
            "Aim for a replacement rate of about 70% of pre-retirement income.",
            "Starting ten years earlier can roughly double the final pot thanks to compounding.",
            "Required minimum distributions begin in your seventies, and missing one is costly.",
            "A life annuity converts a lump sum into income you cannot outlive.",
            "Target-date funds shift from equities to bonds as retirement approaches.",
        ),
    ),
    Topic(
        "foreign exchange",
        (
            "exchange rates", "the spot rate", "forward contracts", "currency pegs",
            "the carry trade", "purchasing power parity", "currency exposure", "capital controls",
        ),
        (
            "The dollar traded at {fx} yuan today, {pips} pips stronger than yesterday.",
            "{co} has {amt} of euro receivables and plans to lock in the rate with a forward.",
            "A carry trade borrows in a low-rate currency to invest in a high-rate one, until the "
            "rate moves against it.",
            "Purchasing power parity suggests exchange rates drift toward equalising price levels.",
            "Exporters can book currency gains or losses even when sales volumes are flat.",
            "{person} is moving abroad and plans to convert savings in several tranches.",
            "Capital controls limit how much money residents can move offshore each year.",
            "A currency peg holds only as long as the central bank has reserves to defend it.",
        ),
    ),
)

TOPICS = {"zh": TOPICS_ZH, "en": TOPICS_EN}

GENERIC = {
    "zh": (
        "简单来说，{term}是{topic}领域里最常被问到的概念之一。",
        "以{co}为例，{year}年相关指标变化了{pct}。",
        "需要提醒的是，以上测算仅供参考，不构成投资建议。",
        "具体到个人，还要结合收入、负债和风险承受能力综合判断。",
        "不少人忽略了{term}，结果在{year}年吃了亏。",
        "如果把时间拉长到{years}年，差别会更加明显。",
        "{person}的经验是先弄清楚{term}，再决定是否行动。",
        "不同银行的具体规定可能不同，办理前请以官方公告为准。",
        "从历史数据看，这一比例大致在{pct_low}到{pct_high}之间波动。",
        "建议每{n}个月复盘一次，并根据情况调整。",
        "在{city}，这类业务的办理流程大约需要{n}个工作日。",
        "把{term}和{term2}放在一起比较，更容易看清两者的差别。",
        "举个例子：本金{amt}，年化{rate}，一年的收益大约是{amt2}。",
        "监管部门近年来对这类业务的要求越来越严格。",
        "总之，{term}没有标准答案，关键在于是否与自身目标匹配。",
        "如果拿不准，可以咨询持牌的专业人士。",
        "另外，别忘了通货膨胀会慢慢侵蚀购买力。",
        "{co}的财务总监{person}在{year}年的业绩说明会上也提到过这一点。",
        "第{n}步是核对合同中的各项费用条款。",
        "对于风险偏好较低的人来说，{term}可能并不合适。",
        "据{city}一家券商的统计，去年有{pct}的客户关注过{term}。",
        "{term}的变化往往滞后于市场情绪，需要耐心观察。",
    ),
    "en": (
        "In short, {term} is one of the things people ask about most in {topic}.",
        "Take {co}: the relevant figure moved by {pct} in {year}.",
        "These numbers are illustrative only and are not investment advice.",
        "For an individual, income, debts and risk tolerance all change the answer.",
        "Plenty of people ignored {term} and paid for it in {year}.",
        "Stretch the horizon to {years} years and the gap becomes much larger.",
        "{person}'s rule of thumb is to understand {term} before acting on it.",
        "Rules vary from bank to bank, so check the official terms before you sign.",
        "Historically the ratio has ranged between {pct_low} and {pct_high}.",
        "Review the plan every {n} months and adjust as circumstances change.",
        "In {city}, the paperwork usually takes about {n} working days.",
        "Putting {term} next to {term2} makes the difference easier to see.",
        "A quick example: {amt} at {rate} earns about {amt2} in a year.",
        "Regulators have tightened the rules on this in recent years.",
        "In the end there is no single right answer on {term}; it depends on your goals.",
        "If in doubt, ask a licensed adviser.",
        "Don't forget that inflation quietly erodes purchasing power.",
        "{co}'s finance director, {person}, made the same point on the {year} earnings call.",
        "Step {n} is to read the fee section of the contract carefully.",
        "If you are risk-averse, {term} may not suit you.",
        "A broker in {city} found that {pct} of its clients asked about {term} last year.",
        "Changes in {term} often lag market sentiment, so give them time.",
    ),
}

QUESTIONS = {
    "zh": (
        "什么是{term}？",
        "请解释一下{term}的含义，并举一个例子。",
        "{term}和{term2}有什么区别？",
        "我今年{age}岁，月收入{yuan}元，应该怎样看待{term}？",
        "{co}的{term}出现变化，说明了什么？",
        "关于{topic}，新手最容易犯哪些错误？",
        "{term}应该怎么计算？请给出步骤。",
        "{person}想了解{topic}方面的知识，应该从哪里入手？",
        "手里有{amt}闲钱，在{topic}方面有什么建议？",
        "请用通俗的语言介绍{term}。",
        "在{city}办理和{topic}有关的业务要注意什么？",
        "{term}对普通家庭有什么影响？",
        "为什么说{term}很重要？",
        "请简要分析{co}在{topic}方面面临的主要问题。",
        "{year}年以来，{topic}领域有哪些变化值得关注？",
    ),
    "en": (
        "What is {term}?",
        "Can you explain {term} with an example?",
        "How does {term} differ from {term2}?",
        "I'm {age} and take home {amt} a month. How should I think about {term}?",
        "What does the change in {term} at {co} tell us?",
        "What mistakes do beginners make with {topic}?",
        "How do you work out {term}? Please show the steps.",
        "{person} wants to learn about {topic}. Where should they start?",
        "I have {amt} sitting idle. Any advice on {topic}?",
        "Explain {term} in plain language.",
        "What should I watch out for when dealing with {topic} in {city}?",
        "How does {term} affect an ordinary household?",
        "Why does {term} matter?",
        "Briefly analyse the main {topic} issues facing {co}.",
        "What has changed in {topic} since {year} that is worth watching?",
    ),
}

LEAD_INS = {
    "zh": (
        "我刚参加工作不久。", "最近在研究{topic}。", "家里人让我帮忙问问。", "我在{city}工作。",
        "朋友推荐我关注{term}。",
    ),
    "en": (
        "I'm new to this.",
        "I've been reading about {topic} lately.",
        "Asking for my parents.",
        "I work in {city}.",
        "A friend told me to look into {term}.",
    ),
}

FOLLOW_UPS = {
    "zh": (
        "那{term2}呢？",
        "能再举个具体的数字例子吗？",
        "如果期限改成{years}年会怎样？",
        "谢谢，还有别的需要注意的吗？",
        "这对{co}这样的公司有什么影响？",
        "{person}的情况适合这样做吗？",
    ),
    "en": (
        "What about {term2}?",
        "Could you give a concrete numerical example?",
        "What if the term were {years} years instead?",
        "Thanks. Anything else to watch out for?",
        "How would this affect a company like {co}?",
        "Would that work in {person}'s situation?",
    ),
}

# Alpaca records with an `input` get one of these as the instruction.
WITH_CONTEXT = {
    "zh": ("结合下面的材料回答：{q}", "根据给出的信息，{q}", "阅读以下内容后回答问题：{q}"),
    "en": (
        "Using the information below, answer: {q}",
        "Based on the context given, {q}",
        "Read the following and answer the question. {q}",
    ),
}

SYSTEMS = {
    "zh": (
        "你是一名专业的金融顾问，请用简洁准确的中文回答。",
        "你是银行的智能客服助手。",
        "你是一位注册会计师，回答要严谨。",
        "你是{co}的投资者关系助理。",
        "请以理财规划师的身份回答用户的问题。",
    ),
    "en": (
        "You are a helpful financial assistant.",
        "You are a customer-service assistant for a retail bank.",
        "You are a chartered accountant; answer precisely.",
        "You are an investor-relations assistant at {co}.",
        "Answer as a certified financial planner would.",
    ),
}

# Used for near-duplicate edits: an appended sentence and single-word swaps.
CLOSERS = {
    "zh": ("希望对你有帮助。", "如有疑问欢迎继续提问。", "以上仅供参考。", "祝投资顺利！"),
    "en": (
        "Hope this helps.",
        "Let me know if you have other questions.",
        "This is for reference only.",
        "Good luck!",
    ),
}
WORD_SWAPS = {
    "zh": {
        "通常": "一般",
        "一般": "通常",
        "建议": "推荐",
        "需要": "须要",
        "可能": "也许",
        "明显": "显著",
        "降低": "减少",
        "注意": "留意",
        "大约": "大概",
        "较低": "偏低",
    },
    "en": {
        "usually": "typically",
        "about": "around",
        "roughly": "approximately",
        "often": "frequently",
        "check": "verify",
        "cheaper": "less costly",
        "simplest": "easiest",
        "larger": "bigger",
        "before": "prior to",
        "typically": "usually",
    },
}

CO_HEAD = {
    "zh": (
        "华源", "鼎盛", "恒通", "瑞丰", "金桥", "中联", "远航", "嘉禾", "宏达", "泰和", "永安",
        "天衡", "博远", "同创", "锦程", "云帆", "盛世", "海川", "鸿运", "信诚", "北辰", "南山",
        "江海", "启明", "九州", "众合", "长青", "星河", "福瑞", "百川",
    ),
    "en": (
        "North", "Silver", "Blue", "Harbor", "Summit", "Pine", "Iron", "Golden", "Cedar", "Maple",
        "Granite", "Falcon", "Beacon", "Orchard", "Atlas", "Meridian", "Willow", "Copper", "Red",
        "Lake",
    ),
}
CO_BODY = {
    "zh": (
        "科技", "能源", "医药", "食品", "物流", "置业", "制造", "电子", "新材料", "农业", "文旅",
        "环保", "软件", "化工", "汽车", "纺织", "通信", "消费",
    ),
    "en": (
        "bridge Capital", "field Holdings", "stone Industries", "crest Logistics", "wood Foods",
        "gate Energy", "vale Pharma", "brook Systems", "ridge Partners", "point Retail",
        "haven Motors", "mark Textiles",
    ),
}
CO_TAIL = {
    "zh": ("股份有限公司", "集团", "有限公司", "控股"),
    "en": (" Inc.", " Ltd", " plc", " Group", ""),
}
SURNAMES_ZH = (
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "高", "罗",
)
GIVEN_ZH = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚英华建文辉玲鹏飞晨宇浩欣怡婷睿博涵"
FIRST_EN = (
    "Alice", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jack", "Kavya",
    "Liam", "Mei", "Noah", "Olivia", "Priya", "Quinn", "Ravi", "Sofia", "Tom", "Uma", "Victor",
    "Wen", "Yusuf", "Zoe",
)
LAST_EN = (
    "Walker", "Chen", "Patel", "Okafor", "Schmidt", "Rossi", "Nguyen", "Smith", "Garcia",
    "Kowalski", "Murphy", "Tanaka", "Li", "Brown", "Haddad", "Silva", "Novak", "Evans", "Khan",
    "Dubois",
)
CITIES = {
    "zh": (
        "北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆", "苏州",
        "天津", "长沙", "郑州", "青岛", "厦门",
    ),
    "en": (
        "Shanghai", "London", "New York", "Singapore", "Hong Kong", "Toronto", "Sydney",
        "Frankfurt", "Chicago", "Manchester", "Dublin", "Auckland",
    ),
}


def _money(rng: random.Random, lang: str, scale: int) -> str:
    """An amount; `scale` (fixed per record) keeps a record's amounts within one
    order of magnitude band, so they read as belonging together."""
    if lang == "zh":
        return (f"{rng.randint(2, 500)}万元", f"{rng.randint(1, 99)}.{rng.randint(1, 9)}亿元",
                f"{rng.randint(1000, 99999)}元")[scale]
    return (f"${rng.randint(2, 950) * 100:,}", f"${rng.randint(1, 99)}.{rng.randint(1, 9)} million",
            f"${rng.randint(1000, 99999):,}")[scale]


# Drawn anew at every use ({amt} and {amt2} too, see _money). Numbers stay below
# six digits so ordinary text never looks like a phone, card or ID number.
NUMBER_SLOTS = {
    "pct": lambda r, lang: f"{r.uniform(0.5, 35):.1f}%",
    "pct_low": lambda r, lang: f"{r.uniform(0.5, 15):.1f}%",
    "pct_high": lambda r, lang: f"{r.uniform(15.1, 35):.1f}%",
    "rate": lambda r, lang: f"{r.uniform(1.2, 6.5):.2f}%",
    "rate2": lambda r, lang: f"{r.uniform(1.2, 6.5):.2f}%",
    "bp": lambda r, lang: str(r.randint(5, 150)),
    "cut": lambda r, lang: r.choice(("0.25", "0.5")),
    "years": lambda r, lang: str(r.randint(2, 30)),
    "year": lambda r, lang: str(r.randint(2015, 2025)),
    "n": lambda r, lang: str(r.randint(2, 12)),
    "big_n": lambda r, lang: str(r.randint(30, 120)),
    "big_n2": lambda r, lang: str(r.randint(121, 200)),
    "age": lambda r, lang: str(r.randint(22, 60)),
    "day": lambda r, lang: str(r.randint(1, 28)),
    "fx": lambda r, lang: f"{r.uniform(6.8, 7.35):.4f}",
    "pips": lambda r, lang: str(r.randint(5, 300)),
    "multiple": lambda r, lang: f"{r.uniform(5, 80):.1f}",
    "yuan": lambda r, lang: str(r.randint(300, 30000)),
}
SLOT = re.compile(r"\{(\w+)\}")


def company(rng: random.Random, lang: str) -> str:
    return rng.choice(CO_HEAD[lang]) + rng.choice(CO_BODY[lang]) + rng.choice(CO_TAIL[lang])


def person(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        if rng.random() < 0.4:
            return rng.choice(SURNAMES_ZH) + rng.choice(("先生", "女士"))
        return rng.choice(SURNAMES_ZH) + "".join(rng.sample(GIVEN_ZH, rng.randint(1, 2)))
    return f"{rng.choice(FIRST_EN)} {rng.choice(LAST_EN)}"


class Slots:
    """Fills {slot} placeholders for one record: company, person, city and the
    two terms stay the same across its sentences so the record reads as one."""

    def __init__(self, rng: random.Random, lang: str, topic: Topic):
        self.rng, self.lang = rng, lang
        term, term2 = rng.sample(topic.terms, 2)
        self.fixed = {"topic": topic.name, "term": term, "term2": term2, "co": company(rng, lang),
                      "person": person(rng, lang), "city": rng.choice(CITIES[lang])}
        self.money_scale = rng.randrange(3)

    def fill(self, template: str) -> str:
        return SLOT.sub(self._value, template)

    def _value(self, m: re.Match) -> str:
        name = m.group(1)
        if name in self.fixed:
            return self.fixed[name]
        if name in ("amt", "amt2"):
            return _money(self.rng, self.lang, self.money_scale)
        return NUMBER_SLOTS[name](self.rng, self.lang)


# ---------------------------------------------------------------------------
# Conversations
# ---------------------------------------------------------------------------


@dataclass
class Conv:
    """One record before it is written in a file's format."""

    lang: str
    turns: list[list[str]]  # [user, assistant] pairs
    system: str = ""
    context: str = ""  # alpaca `input`; only alpaca records carry one

    def texts(self) -> list[str]:
        return [self.system, self.context] + [t for pair in self.turns for t in pair]

    def dedup_text(self) -> str:
        """What danlu's dedup shingles: the non-system turns joined by newlines,
        with alpaca's input after the instruction as the alpaca reader puts it."""
        turns = copy.deepcopy(self.turns)
        if self.context:
            turns[-1][0] += "\n" + self.context
        return "\n".join(t for pair in turns for t in pair)

    def map_texts(self, fn) -> Conv:
        """A copy with `fn` applied to every non-empty text."""
        out = copy.deepcopy(self)
        out.system = fn(out.system) if out.system else ""
        out.context = fn(out.context) if out.context else ""
        out.turns = [[fn(u), fn(a)] for u, a in out.turns]
        return out


def join_sentences(lang: str, sentences: list[str]) -> str:
    return ("" if lang == "zh" else " ").join(sentences)


def compose_answer(rng: random.Random, slots: Slots, lang: str, topic_index: int, k: int,
                   used: set[str], wide: bool = False) -> str:
    """k sentences, mostly the topic's own facts, the rest generic; `wide` adds two
    other topics' facts so long answers need not repeat a template."""
    facts = list(TOPICS[lang][topic_index].facts)
    if wide:
        others = rng.sample([i for i in range(len(TOPIC_KEYS)) if i != topic_index], 2)
        facts += [f for i in others for f in TOPICS[lang][i].facts]
    facts = [f for f in facts if f not in used]
    generic = [g for g in GENERIC[lang] if g not in used]
    n_facts = min(len(facts), max(1, round(k * 0.6)))
    chosen = rng.sample(facts, n_facts) + rng.sample(generic, min(len(generic), k - n_facts))
    rng.shuffle(chosen)
    used.update(chosen)
    sentences = [slots.fill(t) for t in chosen]
    if len(sentences) >= 3 and rng.random() < 0.12:  # some answers come as numbered lists
        return "\n".join(f"{i}. {s}" for i, s in enumerate(sentences, 1))
    return join_sentences(lang, sentences)


def compose_conversation(rng: random.Random, lang: str, long: bool = False,
                         with_context: bool = False) -> Conv:
    topic_index = rng.randrange(len(TOPIC_KEYS))
    topic = TOPICS[lang][topic_index]
    slots = Slots(rng, lang, topic)
    used: set[str] = set()
    n_turns = rng.choices((1, 2, 3), weights=(62, 27, 11))[0]
    turns = []
    for t in range(n_turns):
        if t == 0:
            question = slots.fill(rng.choice(QUESTIONS[lang]))
            if rng.random() < 0.3:
                question = join_sentences(lang, [slots.fill(rng.choice(LEAD_INS[lang])), question])
            if long:
                k = rng.randint(20, 45) if lang == "zh" else rng.randint(12, 20)
            else:
                k = rng.choices(range(2, 9), weights=(30, 26, 17, 10, 7, 5, 5))[0]
        else:
            question = slots.fill(rng.choice(FOLLOW_UPS[lang]))
            k = rng.randint(1, 4)
        turns.append([question, compose_answer(rng, slots, lang, topic_index, k, used, wide=long)])
    system = slots.fill(rng.choice(SYSTEMS[lang])) if rng.random() < 0.25 else ""
    conv = Conv(lang, turns, system)
    if with_context:
        picks = rng.sample([f for f in topic.facts if "{" in f], 2)[: rng.randint(1, 2)]
        conv.context = join_sentences(lang, [slots.fill(f) for f in picks])
        conv.turns[-1][0] = rng.choice(WITH_CONTEXT[lang]).format(q=conv.turns[-1][0])
    return conv


# ---------------------------------------------------------------------------
# PII values and decoys
# ---------------------------------------------------------------------------

# County codes python-stdnum's cn.ric accepts (danlu's masker uses it), each with
# the first birth year it accepts: it also checks the county existed by then.
REGION_CODES = (("110101", 1955), ("110102", 1955), ("110105", 1955), ("110108", 1955),
                ("310101", 1955), ("310104", 1955), ("310110", 1955), ("120101", 1955),
                ("120103", 1955), ("330106", 1983), ("420106", 1983), ("320102", 1983),
                ("610113", 1983), ("370202", 1983), ("350203", 1983), ("410105", 1983),
                ("440106", 1985), ("510107", 1990), ("440305", 1990))
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CARD_BINS = ("622202", "621700", "622848", "621661", "622588", "436742", "456351", "524047")
MOBILE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155",
    "157", "158", "159", "166", "176", "177", "178", "180", "181", "182", "183", "186", "187",
    "188", "189", "191", "198", "199",
)
MAIL_DOMAINS = (
    "163.com", "qq.com", "126.com", "gmail.com", "outlook.com", "example.com", "sina.com",
    "yahoo.co.uk",
)
PINYIN = (
    "wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "zhou", "wu", "wei", "fang",
    "min", "jing", "lei", "jun", "tao", "ming", "hui", "peng", "yu", "hao", "xin", "ting",
)


def id_check_char(first17: str) -> str:
    """GB 11643-1999 MOD 11-2 check character of a resident ID number."""
    total = sum(int(d) * w for d, w in zip(first17, ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11]


def luhn_check_digit(body: str) -> str:
    """The digit that makes body + digit pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these are the doubled positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str(-total % 10)


def luhn_valid(digits: str) -> bool:
    return luhn_check_digit(digits[:-1]) == digits[-1]


def id_body(rng: random.Random) -> str:
    """Region code + a real birth date (up to 2004) + 3-digit sequence: 17 digits."""
    region, first_year = rng.choice(REGION_CODES)
    start = date(first_year, 1, 1)
    birth = start + timedelta(days=rng.randrange((date(2004, 12, 31) - start).days))
    return region + birth.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"


def resident_id(rng: random.Random, want_x: bool = False) -> str:
    body = id_body(rng)
    while want_x and id_check_char(body) != "X":  # exercise the X check character
        body = id_body(rng)
    return body + id_check_char(body)


def mobile(rng: random.Random, style: int) -> str:
    digits = rng.choice(MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
    return (digits, f"{digits[:3]}-{digits[3:7]}-{digits[7:]}",
            f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}")[style % 3]


def group4(digits: str) -> str:
    return " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def bank_card(rng: random.Random, style: int) -> str:
    length = (16, 19)[style % 2]
    body = rng.choice(CARD_BINS)
    body += "".join(str(rng.randrange(10)) for _ in range(length - 1 - len(body)))
    digits = body + luhn_check_digit(body)
    return group4(digits) if style % 4 >= 2 else digits


def email(rng: random.Random, lang: str) -> str:
    if lang == "zh":
        local = rng.choice(PINYIN) + rng.choice(("", ".", "_")) + rng.choice(PINYIN)
    else:
        local = f"{rng.choice(FIRST_EN)}.{rng.choice(LAST_EN)}".lower()
    return f"{local}{rng.randint(1, 99)}@{rng.choice(MAIL_DOMAINS)}"


def ipv4(rng: random.Random) -> str:
    first = rng.choice([a for a in range(1, 224) if a not in (10, 127)])
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randint(1, 254)}"


def ipv6(rng: random.Random, style: int) -> str:
    head = rng.choice(("240e", "2408", "2409", "2001:db8", "2a02"))
    groups = [f"{rng.randrange(1, 1 << 16):x}" for _ in range(8 - head.count(":") - 1)]
    if style % 2:  # compressed: keep a few groups each side of a ::
        return f"{head}:{':'.join(groups[:2])}::{groups[-1]}"
    return f"{head}:{':'.join(groups)}"


def decoy_id(rng: random.Random) -> str:
    """An 18-digit number shaped like an ID (real region, real date) whose check
    digit is wrong, and which fails Luhn too so no card rule can claim it."""
    while True:
        body = id_body(rng)
        wrong = rng.choice([d for d in "0123456789" if d != id_check_char(body)])
        if not luhn_valid(body + wrong):
            return body + wrong


def decoy_card(rng: random.Random, grouped: bool) -> str:
    """16 digits with a card prefix that fail the Luhn check."""
    while True:
        body = rng.choice(CARD_BINS) + "".join(str(rng.randrange(10)) for _ in range(9))
        wrong = rng.choice([d for d in "0123456789" if d != luhn_check_digit(body)])
        # A group starting 13-19 could read as a phone number split by spaces.
        if not (grouped and re.search(r"(^| )1[3-9]", group4(body + wrong))):
            return group4(body + wrong) if grouped else body + wrong


def order_number(rng: random.Random, style: int) -> str:
    day = (date(2023, 1, 1) + timedelta(days=rng.randrange(700))).strftime("%Y%m%d")
    return (f"DD{day}{rng.randrange(10**6):06d}", f"ORD-{day}-{rng.randrange(10**4):04d}",
            f"PO{day}{rng.randrange(10**5):05d}")[style % 3]


PII_TYPES = ("resident_id", "mobile", "bank_card", "email", "ipv4", "ipv6")
# Per kind: sentences a user would write, then (last) one an assistant would.
PII_SENTENCES = {
    "zh": {
        "resident_id": (
            "我的身份证号是{v}。",
            "申请人身份证号码：{v}。",
            "已为身份证号{v}的客户登记了申请。",
        ),
        "mobile": (
            "我的手机号是{v}，方便的话请回电。",
            "联系电话{v}。",
            "客户经理会通过{v}与您联系。",
        ),
        "bank_card": ("我的银行卡号是{v}。", "扣款卡号为{v}。", "退款将退回至卡号{v}。"),
        "email": ("我的邮箱是{v}。", "资料请发到{v}。", "对账单已发送至{v}。"),
        "ipv4": (
            "我登录网银时显示的IP是{v}。",
            "后台记录的访问地址是{v}。",
            "系统记录到来自{v}的登录请求。",
        ),
        "ipv6": ("路由器显示的IPv6地址是{v}。", "异常登录来自{v}。", "本次操作的来源地址为{v}。"),
    },
    "en": {
        "resident_id": (
            "My Chinese ID number is {v}.",
            "The applicant's resident ID is {v}.",
            "We have logged the application for ID {v}.",
        ),
        "mobile": (
            "You can reach me on {v}.",
            "My mobile is {v}, call any time.",
            "Your relationship manager will call you on {v}.",
        ),
        "bank_card": (
            "My card number is {v}.",
            "The debit card on file is {v}.",
            "The refund will go back to card {v}.",
        ),
        "email": (
            "Please email me at {v}.",
            "Send the documents to {v}.",
            "The statement was sent to {v}.",
        ),
        "ipv4": (
            "The login came from {v}.",
            "My online banking showed the address {v} this morning.",
            "A sign-in from {v} was blocked, as a precaution.",
        ),
        "ipv6": (
            "The router reports the IPv6 address {v}.",
            "The request came from {v}.",
            "That session originated at {v}.",
        ),
    },
}
DECOY_TYPES = ("bad_check_id", "bad_luhn_card", "order_number")
# Same shape: (user's sentence, assistant's sentence). Decoys are numbers that
# look like PII but are not, and must come through cleaning unmasked.
DECOY_SENTENCES = {
    "zh": {
        "bad_check_id": ("我的交易流水号是{v}。", "本次业务的受理编号为{v}。"),
        "bad_luhn_card": ("合同编号{v}，麻烦帮我查一下。", "参考号{v}，请妥善保存。"),
        "order_number": ("我的订单号是{v}，还没发货。", "您的订单{v}预计3个工作日内发货。"),
    },
    "en": {
        "bad_check_id": ("My transaction reference is {v}.", "Your case number is {v}."),
        "bad_luhn_card": ("Contract number {v} is the one I mean.",
                          "Keep reference {v} for your records."),
        "order_number": ("My order {v} still hasn't arrived.", "Your order {v} has shipped."),
    },
}


# ---------------------------------------------------------------------------
# Planting: what is done to a clean record, and how it is recorded
# ---------------------------------------------------------------------------


@dataclass
class Entry:
    """One record of an output file: a Conv to render, or a raw value written as is
    (malformed records cannot be a Conv). `tag` becomes its planted.json item."""

    conv: Conv | None = None
    raw: object = None
    tag: dict = field(default_factory=dict)
    source: Entry | None = None  # the record this one duplicates
    used: bool = False  # already the source of a planted copy
    loc: dict = field(default_factory=dict)  # set once the file's order is final


def normalise(text: str) -> str:
    """What danlu compares after cleaning (full-width alnum to ASCII, invisible
    characters dropped, whitespace runs collapsed): used here only to assert
    that a 'normalised' duplicate really is one."""
    text = "".join(chr(ord(c) - 0xFEE0) if "\uff10" <= c <= "\uff5a" and c.isalnum() else c
                   for c in text)
    text = "".join(c for c in text if c in "\n" or unicodedata.category(c) not in ("Cc", "Cf"))
    return "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()


def shingles(text: str) -> set[str]:
    """Character 5-grams when at least 10% of the non-space characters are CJK,
    else 3-grams of lowercased \\w+ words: the definition danlu's dedup uses."""
    chars = [c for c in text if not c.isspace()]
    if sum(1 for c in chars if "\u3400" <= c <= "\u9fff") >= 0.1 * len(chars):
        return {text[i:i + 5] for i in range(len(text) - 4)}
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + 3]) for i in range(len(words) - 2)}


def jaccard(a: Conv, b: Conv) -> float:
    sa, sb = shingles(a.dedup_text()), shingles(b.dedup_text())
    return len(sa & sb) / len(sa | sb)


def to_fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalnum() else c for c in text)


def normalised_variant(rng: random.Random, conv: Conv) -> tuple[Conv, str]:
    """A copy equal to `conv` only after normalisation: full-width digits, doubled
    spaces and padded ends (never on code, whose whitespace is meaning)."""
    how = rng.choice(("fullwidth_digits", "whitespace", "fullwidth_digits+whitespace"))

    def change(text: str) -> str:
        if "fullwidth" in how:
            text = re.sub(r"\d", lambda m: to_fullwidth(m.group()), text)
        if "whitespace" in how:
            # Spaces and tabs only: a trailing newline would survive where alpaca
            # joins instruction and input with one.
            text = "  " + text.replace(" ", "  ") + " \t"
        return text

    out = conv.map_texts(change)
    if out.texts() == conv.texts():  # nothing to widen: fall back to padding
        how, out = "whitespace", conv.map_texts(lambda t: "  " + t + " \t")
    assert [normalise(t) for t in out.texts()] == [normalise(t) for t in conv.texts()]
    return out, how


def _edit_number(rng: random.Random, lang: str, text: str) -> str | None:
    runs = list(re.finditer(r"\d+", text))
    if not runs:
        return None
    m = rng.choice(runs)
    i = rng.randrange(m.start(), m.end())
    digit = rng.choice([d for d in "0123456789" if d != text[i]])
    return text[:i] + digit + text[i + 1:]


def _edit_word(rng: random.Random, lang: str, text: str) -> str | None:
    found = [w for w in WORD_SWAPS[lang] if re.search(rf"\b{w}\b" if lang == "en" else w, text)]
    if not found:
        return None
    w = rng.choice(found)
    return re.sub(rf"\b{w}\b" if lang == "en" else w, WORD_SWAPS[lang][w], text, count=1)


def _edit_punctuation(rng: random.Random, lang: str, text: str) -> str | None:
    marks = [("，", "；"), ("。", "！")] if lang == "zh" else [(", ", " "), (". ", "! ")]
    present = [m for m in marks if m[0] in text]
    if not present:
        return None
    old, new = rng.choice(present)
    spots = [m.start() for m in re.finditer(re.escape(old), text)]
    i = rng.choice(spots)
    return text[:i] + new + text[i + len(old):]


def _edit_append(rng: random.Random, lang: str, text: str) -> str | None:
    return join_sentences(lang, [text, rng.choice(CLOSERS[lang])])


# Near-duplicate similarity band. The floor sits above 0.85 because MinHash LSH
# at threshold 0.8 (128 permutations: 9 bands of 13) finds a pair at J=0.85
# only ~69% of the time, at 0.90 ~93%: planted pairs should be findable.
NEAR_MIN, NEAR_MAX = 0.90, 0.95
NEAR_EDITS = {"number": _edit_number, "word": _edit_word, "punctuation": _edit_punctuation,
              "append": _edit_append}


def near_variant(rng: random.Random, conv: Conv) -> tuple[Conv, list[str], float] | None:
    """A copy with one to three small edits to the last answer whose shingle
    Jaccard with the original lands in [NEAR_MIN, NEAR_MAX]; None if none does."""
    for _ in range(20):
        out, edits = copy.deepcopy(conv), []
        while len(edits) < 3:
            name = rng.choice(list(NEAR_EDITS))
            edited = NEAR_EDITS[name](rng, conv.lang, out.turns[-1][1])
            if edited is None:
                continue
            out.turns[-1][1] = edited
            edits.append(name)
            score = jaccard(conv, out)
            if score < NEAR_MIN:
                break
            if score <= NEAR_MAX:
                return out, edits, round(score, 3)
    return None


def pii_value(rng: random.Random, kind: str, style: int, lang: str) -> str:
    """`style` (how many of this kind came before) cycles the written forms."""
    if kind == "resident_id":
        return resident_id(rng, want_x=style % 8 == 0)
    if kind == "mobile":
        return mobile(rng, style)
    if kind == "bank_card":
        return bank_card(rng, style)
    if kind == "email":
        return email(rng, lang)
    if kind == "ipv4":
        return ipv4(rng)
    return ipv6(rng, style)


def decoy_value(rng: random.Random, kind: str, style: int) -> str:
    if kind == "bad_check_id":
        return decoy_id(rng)
    if kind == "bad_luhn_card":
        return decoy_card(rng, grouped=style % 3 == 2)
    return order_number(rng, style)


def plant_pii(rng: random.Random, conv: Conv, kinds: list[str], seen: Counter) -> list[dict]:
    """Put one sentence per PII kind into the first question or the last answer."""
    values = []
    for kind in kinds:
        value = pii_value(rng, kind, seen[kind], conv.lang)
        seen[kind] += 1
        _insert_sentence(rng, conv, PII_SENTENCES[conv.lang][kind], value)
        values.append({"type": kind, "value": value})
    return values


def plant_decoy(rng: random.Random, conv: Conv, kind: str, seen: Counter) -> dict:
    value = decoy_value(rng, kind, seen[kind])
    seen[kind] += 1
    _insert_sentence(rng, conv, DECOY_SENTENCES[conv.lang][kind], value)
    return {"type": kind, "value": value}


def _insert_sentence(rng: random.Random, conv: Conv, sentences: tuple[str, ...],
                     value: str) -> None:
    """Before or after the first question (a user's sentence) or the last answer
    (the assistant's sentence, the last of `sentences`)."""
    if rng.random() < 0.6:
        turn, side, sentence = 0, 0, rng.choice(sentences[:-1])
    else:
        turn, side, sentence = len(conv.turns) - 1, 1, sentences[-1]
    parts = [sentence.format(v=value), conv.turns[turn][side]]
    conv.turns[turn][side] = join_sentences(conv.lang, parts if rng.random() < 0.5 else parts[::-1])


ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\ufeff")
CONTROL = ("\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f")


def _sprinkle(rng: random.Random, text: str, chars: tuple[str, ...], n: int) -> str:
    for _ in range(n):
        i = rng.randint(1, len(text) - 1)
        text = text[:i] + rng.choice(chars) + text[i:]
    return text


def add_noise(rng: random.Random, conv: Conv, kind: str) -> None:
    """Text noise that normalisation should undo, in the last answer."""
    text = conv.turns[-1][1]
    if kind == "fullwidth":
        runs = list(re.finditer(r"[A-Za-z0-9]+", text)) or list(re.finditer(r"\S+", text))
        for m in rng.sample(runs, min(3, len(runs))):
            text = text[:m.start()] + to_fullwidth(m.group()) + text[m.end():]
        if not any("\uff10" <= c <= "\uff5a" for c in text):
            text += "（ＡＢＣ１２３）" if conv.lang == "zh" else " (ＡＢＣ１２３)"
    elif kind == "zero_width":
        text = _sprinkle(rng, text, ZERO_WIDTH, rng.randint(2, 5))
    elif kind == "control":
        text = _sprinkle(rng, text, CONTROL, rng.randint(1, 3))
    elif kind == "spaces":
        spots = [m.end() for m in re.finditer(r"[ ，。]", text)]
        for i in sorted(rng.sample(spots, min(3, len(spots))), reverse=True):
            text = text[:i] + rng.choice(("   ", "      ", "\t ", "  \t  ")) + text[i:]
        text += "    "
    conv.turns[-1][1] = text


CODE_EN = '''Use the standard annuity formula. A small function does it:

```python
def monthly_payment(principal, annual_rate, years):
    """Fixed monthly payment of an amortising loan."""
    r = annual_rate / 12
    n = years * 12
    if r == 0:
        return principal / n
    growth = (1 + r) ** n
    return principal * r * growth / (growth - 1)


print(round(monthly_payment(PRINCIPAL, RATE, YEARS), 2))
```

With these inputs the payment comes to about $PAYMENT a month. Keep the indentation \
exactly as shown, or Python will refuse to run it.'''

CODE_ZH = '''可以按月复利逐期累加，示例代码如下：

```python
def future_value(monthly, annual_rate, years):
    balance = 0.0
    for month in range(years * 12):
        balance = balance * (1 + annual_rate / 12) + monthly
        if month % 12 == 11:
            print(f"第{month // 12 + 1}年末余额：{balance:,.2f}")
    return balance


future_value(MONTHLY, RATE, YEARS)
```

注意缩进必须保留，否则代码无法运行。按年化RATE_PCT计算，YEARS年后余额约为FV元。'''


def code_conv(rng: random.Random, lang: str) -> Conv:
    """A record whose answer holds a fenced Python block (its indentation must survive)."""
    years, rate = rng.randint(5, 30), rng.choice((0.03, 0.035, 0.04, 0.045))
    if lang == "en":
        principal = rng.randint(10, 60) * 10_000
        r, n = rate / 12, years * 12
        payment = principal * r * (1 + r) ** n / ((1 + r) ** n - 1)
        answer = (CODE_EN.replace("PRINCIPAL", str(principal)).replace("RATE", str(rate))
                  .replace("YEARS", str(years)).replace("PAYMENT", f"{payment:,.2f}"))
        question = f"How can I compute the monthly payment on a ${principal:,} loan in Python?"
    else:
        monthly = rng.randint(5, 50) * 100
        balance = 0.0
        for _ in range(years * 12):
            balance = balance * (1 + rate / 12) + monthly
        answer = (CODE_ZH.replace("MONTHLY", str(monthly)).replace("RATE_PCT", f"{rate:.1%}")
                  .replace("RATE", str(rate)).replace("YEARS", str(years))
                  .replace("FV", f"{balance:,.0f}"))
        question = f"每月定投{monthly}元，怎样用Python计算{years}年后的账户余额？"
    return Conv(lang, [[question, answer]])


# ---------------------------------------------------------------------------
# Malformed records, per format. Each returns (what the file holds, kind).
# ---------------------------------------------------------------------------


def _blob(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(3000)).decode()


def _long_text(rng: random.Random, lang: str, min_chars: int) -> str:
    """A report stitched from every topic's facts, past the length filter."""
    slots = Slots(rng, lang, TOPICS[lang][0])
    facts = [f for t in TOPICS[lang] for f in t.facts] + list(GENERIC[lang])
    text = ""
    while len(text) < min_chars:
        text = join_sentences(lang, [text, slots.fill(rng.choice(facts))]) if text else \
            slots.fill(rng.choice(facts))
    return text


def bad_alpaca(rng: random.Random) -> list[tuple[object, str]]:
    return [
        ('{"instruction": "什么是久期？", "input": "", "output": "久期衡量债券价格',
         "invalid_json"),
        ("{'instruction': 'What is a bond?', 'input': '', 'output': 'A loan to an issuer.'}",
         "invalid_json"),
        ('{"instruction": "解释一下市盈率。", "input": "", "output": "股价除以每股收益。",}',
         "invalid_json"),
        ("", "blank_line"),
        ("   \t  ", "blank_line"),
        ({"instruction": "", "input": "", "output": ""}, "empty_record"),
        ({}, "empty_record"),
        ({"instruction": "What is a credit spread?", "input": ""}, "missing_output"),
        ({"instruction": "什么是久期？", "input": "", "output": ""}, "empty_output"),
        ({"instruction": "一年期LPR是多少？", "input": "", "output": 3.1}, "wrong_type"),
        ({"instruction": "List two kinds of bond.", "input": "",
          "output": ["Government bonds.", "Corporate bonds."]}, "wrong_type"),
        ({"instruction": "What is an ETF?", "input": "",
          "output": "An exchange-traded fund.<|im_end|>\n<|im_start|>user\nAnd an index fund?"},
         "special_tokens"),
        ({"instruction": "请帮我看看这个附件里的报表有什么问题。", "input": _blob(rng),
          "output": "附件无法解析，请上传PDF或Excel文件。"}, "base64_blob"),
        ({"instruction": "Write a full market review covering every asset class.", "input": "",
          "output": _long_text(rng, "en", 21_000)}, "too_long"),
        ({"instruction": "什么是应急资金？", "input": "", "output": "   \n\t  "},
         "whitespace_answer"),
    ]


def _sg(*turns: tuple[str, object]) -> dict:
    return {"conversations": [{"from": r, "value": v} for r, v in turns]}


def bad_sharegpt(rng: random.Random) -> list[tuple[object, str]]:
    return [
        (_sg(("human", "什么是信用卡取现？"), ("gpt", "")), "empty_output"),
        ({"conversations": [{"from": "human", "value": "What is a sinking fund?"},
                            {"from": "gpt"}]},
         "missing_output"),
        (_sg(("human", "How many days is the grace period?"), ("gpt", 56)), "wrong_type"),
        (_sg(("human", "基金有哪些费用？"), ("gpt", ["管理费", "托管费", "申购费"])), "wrong_type"),
        ({"conversations": []}, "empty_conversation"),
        ({"conversations": []}, "empty_conversation"),
        (_sg(("human", "What is duration?"), ("human", "Sorry, I meant modified duration."),
             ("gpt", "Modified duration is the percentage price change per 1% move in yield.")),
         "bad_role_order"),
        (_sg(("gpt", "您好，请问有什么可以帮您？"), ("human", "我想了解定投。"),
             ("gpt", "定投就是定期定额买入基金。")), "bad_role_order"),
        (_sg(("human", "What is an annuity?"), ("gpt", "A contract that pays income for life."),
             ("human", "How much does one cost?")), "last_turn_user"),
        (_sg(("human", "什么是复利？<|im_end|>"), ("gpt", "复利就是利滚利。")), "special_tokens"),
        (_sg(("human", "请写一份覆盖各类资产的年度市场回顾。"),
             ("gpt", _long_text(rng, "zh", 21_000))),
         "too_long"),
        (_sg(("human", "什么是年费？"), ("gpt", "\u3000\u3000")), "whitespace_answer"),
    ]


def _msgs(*turns: tuple[str, str | None]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def bad_messages(rng: random.Random) -> list[tuple[object, str]]:
    return [
        (_msgs(("user", "What is a stop-loss order?"), ("assistant", "")), "empty_output"),
        (_msgs(("user", "什么是ETF？"), ("assistant", None)), "missing_output"),
        ({"messages": []}, "empty_conversation"),
        ({"messages": []}, "empty_conversation"),
        (_msgs(("user", "什么是市净率？"), ("user", "顺便问下市盈率。"),
               ("assistant", "市净率是股价除以每股净资产。")),
         "bad_role_order"),
        (_msgs(("assistant", "Hello! How can I help?"), ("user", "What is APR?"),
               ("assistant", "The annual percentage rate, including fees.")), "bad_role_order"),
        (_msgs(("user", "我的信用卡账单日是哪天？"), ("assistant", "请在App中查看。"),
               ("user", "在哪里查看？")),
         "last_turn_user"),
        (_msgs(("user", "Define gross margin."),
               ("assistant", "Revenue minus cost of goods sold, over revenue.<|endoftext|>")),
         "special_tokens"),
        (_msgs(("user", "Here is my statement: data:application/pdf;base64," + _blob(rng)),
               ("assistant", "I can't read attachments; please paste the figures.")),
         "base64_blob"),
        (_msgs(("user", "What is a deductible?"), ("assistant", "\n\n")), "whitespace_answer"),
    ]


# ---------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FilePlan:
    name: str
    fmt: str
    total: int
    exact_verbatim: int
    exact_normalised: int
    exact_cross_file: int
    near: int
    pii: int
    decoy: int
    noise: tuple[tuple[str, int], ...]
    code_langs: tuple[str, ...]


PLANS = (
    FilePlan("alpaca_finance.jsonl", "alpaca", 1500, 15, 15, 15, 45, 75, 12,
             (("fullwidth", 10), ("zero_width", 10), ("control", 6), ("spaces", 10)), ("en",)),
    FilePlan("sharegpt_finance.json", "sharegpt", 1000, 10, 10, 10, 30, 50, 9,
             (("fullwidth", 6), ("zero_width", 6), ("control", 4), ("spaces", 6)), ("zh",)),
    FilePlan("messages_finance.parquet", "messages", 1000, 10, 10, 10, 30, 50, 9,
             (("fullwidth", 6), ("zero_width", 6), ("control", 4), ("spaces", 6)), ()),
)
BAD = {"alpaca": bad_alpaca, "sharegpt": bad_sharegpt, "messages": bad_messages}
LONG_SHARE = 0.025  # of clean records, for a tail in the length distribution


def build_base(rng: random.Random, plan: FilePlan, n_bad: int) -> list[Entry]:
    """The file's own records, each plain or carrying one planted feature."""
    n = plan.total - n_bad - plan.exact_verbatim - plan.exact_normalised - plan.exact_cross_file \
        - plan.near
    roles = ["pii"] * plan.pii + ["decoy"] * plan.decoy
    roles += [f"code:{lang}" for lang in plan.code_langs]
    roles += [f"noise:{kind}" for kind, count in plan.noise for _ in range(count)]
    roles += ["plain"] * (n - len(roles))
    rng.shuffle(roles)
    entries, seen = [], Counter()  # seen: how many of each role and value kind so far
    for i, role in enumerate(roles):
        lang = ("zh", "en")[i % 2]
        if role.startswith("code:"):
            entries.append(Entry(code_conv(rng, role[5:]), tag={"kind": "code_block"}))
            continue
        long = role == "plain" and rng.random() < LONG_SHARE
        conv = compose_conversation(rng, lang, long=long,
                                    with_context=plan.fmt == "alpaca" and rng.random() < 0.35)
        entry = Entry(conv)
        if role == "pii":
            # Types in round robin, every third record taking two: equal counts per type.
            n_values = 2 if seen["pii"] % 3 == 0 else 1
            kinds = [PII_TYPES[(seen["pii_values"] + j) % 6] for j in range(n_values)]
            seen["pii_values"] += n_values
            entry.tag = {"kind": "pii", "values": plant_pii(rng, conv, kinds, seen)}
        elif role == "decoy":
            kind = DECOY_TYPES[seen["decoy"] % 3]
            entry.tag = {"kind": "decoy", "values": [plant_decoy(rng, conv, kind, seen)]}
        seen[role.split(":")[0]] += 1
        if role.startswith("noise:"):
            add_noise(rng, conv, role[6:])
            entry.tag = {"kind": "noise", "noise": role[6:]}
        elif long:
            entry.tag = {"kind": "long_tail"}
        entries.append(entry)
    rng.shuffle(entries)
    return entries


def duplicate_sources(entries: list[Entry], no_context: bool = False) -> list[Entry]:
    """Records a planted copy may be made of: untagged (so not long, noisy or
    carrying PII) and not yet the source of another copy."""
    return [e for e in entries if not e.tag and not e.source and not e.used
            and (not no_context or not e.conv.context)]


def take(rng: random.Random, pool: list[Entry], k: int) -> list[Entry]:
    picked = rng.sample(pool, k)
    for e in picked:
        e.used = True
        pool.remove(e)
    return picked


def plant_copies(rng: random.Random, plan: FilePlan, own: list[Entry],
                 others: list[list[Entry]]) -> list[Entry]:
    """Exact duplicates (verbatim, normalised, from another file) and near duplicates."""
    copies = []
    pool = duplicate_sources(own)
    for src in take(rng, pool, plan.exact_verbatim):
        copies.append(Entry(copy.deepcopy(src.conv), source=src,
                            tag={"kind": "exact_duplicate", "variant": "verbatim"}))
    for src in take(rng, pool, plan.exact_normalised):
        conv, how = normalised_variant(rng, src.conv)
        tag = {"kind": "exact_duplicate", "variant": "normalised", "change": how}
        copies.append(Entry(conv, source=src, tag=tag))
    for i in range(plan.exact_cross_file):
        other_pool = duplicate_sources(others[i % len(others)], no_context=True)
        src = take(rng, other_pool, 1)[0]
        copies.append(Entry(copy.deepcopy(src.conv), source=src,
                            tag={"kind": "exact_duplicate", "variant": "cross_file"}))
    made = 0
    while made < plan.near:
        src = take(rng, pool, 1)[0]
        result = near_variant(rng, src.conv)
        if result is None:  # too short for any small edit to stay above NEAR_MIN
            continue
        conv, edits, score = result
        copies.append(Entry(conv, source=src, tag={"kind": "near_duplicate", "edits": edits,
                                                   "jaccard": score}))
        made += 1
    return copies


def place(rng: random.Random, base: list[Entry], extra: list[Entry]) -> list[Entry]:
    """Insert each extra entry at a random position."""
    out = list(base)
    for e in extra:
        out.insert(rng.randint(0, len(out)), e)
    return out


def locate(plan: FilePlan, entries: list[Entry]) -> None:
    """Set each entry's location the way danlu's readers report it."""
    for i, e in enumerate(entries):
        if plan.fmt == "alpaca":
            e.loc = {"file": plan.name, "line": i + 1}
        elif plan.fmt == "sharegpt":
            e.loc = {"file": plan.name, "index": i, "id": f"sg-{i:05d}"}
        else:
            e.loc = {"file": plan.name, "row": i + 1, "id": f"msg-{i + 1:05d}"}


# ---------------------------------------------------------------------------
# Rendering and writing
# ---------------------------------------------------------------------------


def as_alpaca(conv: Conv) -> dict:
    (*history, (question, answer)) = conv.turns
    rec = {"instruction": question, "input": conv.context, "output": answer}
    if conv.system:
        rec["system"] = conv.system
    if history:
        rec["history"] = [list(pair) for pair in history]
    return rec


def as_sharegpt(conv: Conv) -> list[dict]:
    turns = [{"from": "system", "value": conv.system}] if conv.system else []
    for user, assistant in conv.turns:
        turns += [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]
    return turns


def as_messages(conv: Conv) -> list[dict]:
    msgs = [{"role": "system", "content": conv.system}] if conv.system else []
    for user, assistant in conv.turns:
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return msgs


def dump(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def write_file(plan: FilePlan, entries: list[Entry], out: Path) -> None:
    path = out / plan.name
    if plan.fmt == "alpaca":
        # A str raw is a line that is not JSON and is written as it is.
        lines = [e.raw if isinstance(e.raw, str) else dump(as_alpaca(e.conv) if e.conv else e.raw)
                 for e in entries]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif plan.fmt == "sharegpt":
        recs = [{"id": e.loc["id"], **({"conversations": as_sharegpt(e.conv)} if e.conv else e.raw)}
                for e in entries]
        # One record per line inside the list: valid JSON that still diffs well.
        path.write_text("[\n" + ",\n".join(dump(r) for r in recs) + "\n]\n", encoding="utf-8")
    else:
        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        schema = pa.schema([("id", pa.string()), ("messages", pa.list_(message))])
        rows = [{"id": e.loc["id"],
                 "messages": as_messages(e.conv) if e.conv else e.raw["messages"]}
                for e in entries]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")


def record_chars(e: Entry) -> int:
    return sum(len(t) for t in e.conv.texts()) if e.conv else 0


def manifest_items(files: dict[str, list[Entry]]) -> list[dict]:
    items = []
    for entries in files.values():
        for e in entries:
            if e.tag:
                item = {**e.loc, **e.tag}
                if e.source is not None:
                    item["of"] = e.source.loc
                items.append(item)
    return items


def write_manifest(path: Path, seed: int, counts: dict, items: list[dict]) -> None:
    """planted.json: valid JSON laid out one count and one item per line, to read and diff."""
    lines = ["{", f' "seed": {seed},', ' "generator": "scripts/make_demo_data.py",', ' "counts": {']
    lines.append(",\n".join(f"  {dump(kind)}: {dump(n)}" for kind, n in counts.items()))
    lines += [" },", ' "items": [', ",\n".join(f"  {dump(item)}" for item in items), " ]", "}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def count_items(items: list[dict]) -> dict:
    """{kind: {file: n}} with PII and decoys also counted by value type."""
    counts: dict[str, Counter] = {}
    for it in items:
        keys = [it["kind"]]
        if it["kind"] in ("exact_duplicate", "noise", "bad"):
            keys.append(f"{it['kind']}:{it.get('variant') or it.get('noise') or it.get('bad')}")
        keys += [f"{it['kind']}_value:{v['type']}" for v in it.get("values", [])]
        for k in keys:
            counts.setdefault(k, Counter())[it["file"]] += 1
    return {k: dict(sorted(v.items())) for k, v in sorted(counts.items())}


# ---------------------------------------------------------------------------
# Tokenizer corpus: same vocabulary, plus exam-style multiple-choice blocks so
# the demo tokenizer also fits C-Eval/CMMLU prompts (our own questions only).
# ---------------------------------------------------------------------------

EXAM_SUBJECTS = {
    "zh": (
        "注册会计师", "税务师", "经济学", "金融学", "会计学", "银行从业资格", "证券从业资格",
        "基金从业资格", "保险学", "财务管理", "统计学", "宏观经济学", "国际金融",
    ),
    "en": (
        "finance", "accounting", "economics", "banking", "insurance", "taxation",
        "corporate finance",
    ),
}
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _wrong_numbers(rng: random.Random, true: str) -> list[str]:
    decimals = len(true.split(".")[1]) if "." in true else 0
    wrong: list[str] = []
    while len(wrong) < 3:
        value = float(true) * rng.choice((0.5, 0.8, 1.2, 1.5, 2, 3)) + rng.randint(0, 3)
        cand = f"{value:.{decimals}f}"
        if cand != true and cand not in wrong:
            wrong.append(cand)
    return wrong


def exam_question(rng: random.Random, lang: str) -> tuple[str, list[str], str]:
    """(stem, four options, answer letter), built from this file's templates."""
    i = rng.randrange(len(TOPIC_KEYS))
    topic = TOPICS[lang][i]
    slots = Slots(rng, lang, topic)
    filled = slots.fill(rng.choice([f for f in topic.facts if "{" in f]))
    numbers = list(NUMBER.finditer(filled))
    if numbers and rng.random() < 0.6:
        m = rng.choice(numbers)
        stem = filled[:m.start()] + "____" + filled[m.end():]
        right, options = m.group(), [m.group()] + _wrong_numbers(rng, m.group())
    else:
        others = rng.sample([t for j, t in enumerate(TOPICS[lang]) if j != i], 3)
        right = filled
        options = [filled] + [slots.fill(rng.choice(t.facts)) for t in others]
        stem = (f"下列关于{slots.fixed['term']}的说法中，正确的是" if lang == "zh"
                else f"Which of the following statements about {slots.fixed['term']} is correct?")
    rng.shuffle(options)
    return stem, options, "ABCD"[options.index(right)]


# (header, question prefix, answer cue) as the reference harnesses write them:
# C-Eval's own code, lm-evaluation-harness's ceval/cmmlu tasks (" A" after the
# cue), CMMLU's own code, and MMLU-style English.
EXAM_STYLES = {
    "zh": (
        ("以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。", "", "答案：", ""),
        ("以下是中国关于{subject}的单项选择题，请选出其中的正确答案。", "", "答案：", " "),
        ("以下是关于{subject}的单项选择题，请直接给出正确答案的选项。", "", "答案：", " "),
        ("以下是关于{subject}的单项选择题，请直接给出正确答案的选项。", "题目：", "答案是：", ""),
    ),
    "en": (
        ("The following are multiple choice questions (with answers) about {subject}.", "",
         "Answer:", " "),
    ),
}


def exam_block(rng: random.Random, lang: str) -> str:
    header, prefix, cue, gap = rng.choice(EXAM_STYLES[lang])
    questions = []
    n = rng.randint(1, 5)
    for k in range(n):
        stem, options, answer = exam_question(rng, lang)
        if k == n - 1 and rng.random() < 0.5:
            answer = ""  # the way an evaluation prompt ends: the model writes the letter
        body = "\n".join(f"{letter}. {opt}" for letter, opt in zip("ABCD", options, strict=True))
        questions.append(f"{prefix}{stem}\n{body}\n{cue}" + (gap + answer if answer else ""))
    subject = rng.choice(EXAM_SUBJECTS[lang])
    return header.format(subject=subject) + "\n\n" + "\n\n".join(questions)


def tokenizer_corpus(rng: random.Random, target_bytes: int) -> str:
    blocks, size = [], 0
    while size < target_bytes:
        lang = rng.choice(("zh", "en"))
        if rng.random() < 0.3:
            block = exam_block(rng, lang)
        else:
            conv = compose_conversation(rng, lang, long=rng.random() < 0.05)
            block = "\n".join(t for t in conv.texts() if t)
        blocks.append(block)
        size += len(block.encode()) + 2
    return "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------------------


def make_demo_data(seed: int, out: Path) -> dict:
    """Write the corpus and planted.json into `out`; return the planted counts."""
    out.mkdir(parents=True, exist_ok=True)
    # One random stream per file (and one for the tokenizer corpus), so editing one
    # file's plan changes the others only where they share cross-file duplicates.
    streams = {p.fmt: random.Random(f"{seed}:{p.fmt}") for p in PLANS}
    bad = {p.fmt: BAD[p.fmt](streams[p.fmt]) for p in PLANS}
    base = {p.fmt: build_base(streams[p.fmt], p, len(bad[p.fmt])) for p in PLANS}
    files = {}
    for plan in PLANS:
        rng = streams[plan.fmt]
        others = [base[p.fmt] for p in PLANS if p is not plan]
        copies = plant_copies(rng, plan, base[plan.fmt], others)
        malformed = [Entry(raw=raw, tag={"kind": "bad", "bad": kind})
                     for raw, kind in bad[plan.fmt]]
        files[plan.fmt] = place(rng, base[plan.fmt], copies + malformed)
    for plan in PLANS:
        locate(plan, files[plan.fmt])
    for plan in PLANS:
        write_file(plan, files[plan.fmt], out)
    items = manifest_items(files)
    counts = count_items(items)
    write_manifest(out / "planted.json", seed, counts, items)
    corpus = tokenizer_corpus(random.Random(f"{seed}:tokenizer"), target_bytes=450_000)
    (out / "tokenizer_corpus.txt").write_text(corpus, encoding="utf-8")
    lengths = {p.name: [record_chars(e) for e in files[p.fmt] if e.conv] for p in PLANS}
    return {"counts": counts, "records": {p.name: len(files[p.fmt]) for p in PLANS},
            "mean_chars": {k: round(sum(v) / len(v)) for k, v in lengths.items()},
            "max_chars": {k: max(v) for k, v in lengths.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("data/demo"))
    args = parser.parse_args()
    summary = make_demo_data(args.seed, args.out)
    names = [p.name for p in PLANS]
    print(f"{'planted':<34}" + "".join(f"{n.split('_')[0]:>10}" for n in names) + f"{'total':>8}")
    for kind, per_file in summary["counts"].items():
        row = [per_file.get(n, 0) for n in names]
        print(f"{kind:<34}" + "".join(f"{v:>10}" for v in row) + f"{sum(row):>8}")
    for key in ("records", "mean_chars", "max_chars"):
        print(f"{key:<34}" + "".join(f"{summary[key][n]:>10}" for n in names))
    for path in sorted(args.out.iterdir()):
        print(f"{path}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
